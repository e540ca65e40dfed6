"""Per-node and per-layer timings of an engine, context and generation phases apart, under canonical names.

How it measures (`profile_engine`):

- context phase: one step over a prompt of `prompt_len` tokens per sequence, through a
  paged KV cache; generation phase: `steps` decode steps of one token per sequence after
  that prompt, each with its own past length, reading and writing the same cache.
- every timed step runs twice, interleaved: once with no node hook (the end-to-end step
  time, what the engine costs as it ships) and once with the timing hook (one sample per
  node). Warm-up runs come first; medians, minima and maxima are over repeats (and over
  decode steps in the generation phase).
- clocks: on the GPU, CUDA events around every node (device time; the events are read
  after a synchronize at the end of each step); on the CPU, time.perf_counter (CPU ops are
  synchronous).
- the node hook is wrapped in NVTX ranges (runtime.nvtx) when a backend is available, so
  the same run under `nsys profile` shows phase > step > layer > node.

`coverage` = sum of the per-layer medians / the end-to-end step median: what the node
timings account for; the rest is the executor's own Python work between nodes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from workbench.builder.engine import Engine
from workbench.builder.network import torch_dtype
from workbench.builder.ops import op_kind
from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_write
from workbench.inspect.op_costs import OpCost, step_costs
from workbench.names import canonical_names
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.executor import Executor
from workbench.runtime.kv_cache import PagedKVCache
from workbench.runtime.nvtx import NvtxRanges, layer_group

PHASES = ("context", "generation")
KINDS = ("attention", "gemm", "norm", "elementwise", "data")
REPORT_VERSION = 1


# -- what a profile returns --------------------------------------------------------------------


@dataclass
class Stat:
    """Median, minimum and maximum of a set of samples, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    samples: int = 0

    @classmethod
    def of(cls, samples_ms: list[float]) -> "Stat":
        """The statistic of a non-empty list of samples."""
        return cls(statistics.median(samples_ms), min(samples_ms), max(samples_ms), len(samples_ms))


@dataclass
class Row:
    """The time of one node, layer or op kind in a step, with its share of the attributed total."""

    name: str
    time: Stat
    share: float  # of the sum of the medians of all rows of the same table
    op: str = ""  # node rows only
    kind: str = ""  # op kind for node rows
    flops: float | None = None  # per step (mean over decode steps)
    bytes: float | None = None

    @property
    def tflops(self) -> float | None:
        """Achieved TFLOP/s at the median time."""
        return None if not self.flops or self.time.median_ms <= 0 else self.flops / (self.time.median_ms * 1e-3) / 1e12

    @property
    def gbps(self) -> float | None:
        """Achieved bandwidth in GB/s at the median time (the minimum bytes a kernel must move)."""
        return None if not self.bytes or self.time.median_ms <= 0 else self.bytes / (self.time.median_ms * 1e-3) / 1e9


@dataclass
class NameRow:
    """A canonical name (`layers.3.attn`): its inclusive time (the name and everything under it) and its own.

    `own` is the time of the nodes run since the previous canonical name, up to and
    including this one: for `layers.3.attn.core` the q/k/v split, RoPE and attention;
    own times partition the step, so they add up to the attributed total.
    """

    name: str
    total: Stat
    own: Stat
    share: float  # of total.median_ms in the attributed total


@dataclass
class Span:
    """One timed interval on the timeline: a node (or HF module) in one sample step."""

    name: str
    step: int  # decode step index (0 for the context phase)
    repeat: int
    start_us: float  # since the profile's origin
    dur_us: float


@dataclass
class BaselineProfile:
    """The HF model's timings per canonical name for one phase (forward hooks on its modules)."""

    step_time: Stat
    names: dict[str, Row]
    spans: list[Span] = field(default_factory=list)
    step_spans: list[Span] = field(default_factory=list)
    attn_implementation: str = "eager"


@dataclass
class PhaseProfile:
    """Everything measured for one phase."""

    phase: str
    num_tokens: int  # tokens in each step's packed batch
    past_lens: list[int]  # the past length of each step (per sequence)
    step_time: Stat  # end to end, no hook
    hooked_step_time: Stat  # end to end, with the timing hook
    nodes: dict[str, Row]
    layers: dict[str, Row]  # embed, layers.i, final_norm, logits
    kinds: dict[str, Row]
    names: dict[str, NameRow]
    spans: list[Span] = field(default_factory=list)
    step_spans: list[Span] = field(default_factory=list)
    baseline: BaselineProfile | None = None
    graph_step_time: Stat | None = None  # cuda backend, generation: one decode step replayed back to back

    @property
    def attributed_ms(self) -> float:
        """The sum of the per-layer medians."""
        return sum(r.time.median_ms for r in self.layers.values())

    @property
    def coverage(self) -> float:
        """attributed_ms / the end-to-end step median."""
        return self.attributed_ms / self.step_time.median_ms if self.step_time.median_ms > 0 else float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Tokens processed per second at the end-to-end step median."""
        return self.num_tokens / (self.step_time.median_ms * 1e-3) if self.step_time.median_ms > 0 else float("nan")


@dataclass
class ProfileConfig:
    """What to run: phases, sizes, warm-up and repeats."""

    phases: tuple[str, ...] = PHASES
    prompt_len: int = 128
    steps: int = 16  # decode steps in the generation phase
    batch_size: int = 1
    warmup: int = 2
    repeats: int = 5
    seed: int = 0
    nvtx: str = "auto"  # runtime.nvtx backend wrapped around the timing hook
    baseline: bool = False  # also time the HF model the engine was built from
    threads: int | None = None  # torch CPU threads while timing (None: as they are); 1 is steadiest on a busy CPU

    def check(self) -> None:
        """Raise WorkbenchError for impossible settings."""
        bad = [p for p in self.phases if p not in PHASES]
        if bad or not self.phases:
            raise WorkbenchError(f"unknown phase {bad[0] if bad else '(none)'}; choose context, generation or both")
        for key, low in (("prompt_len", 1), ("steps", 1), ("batch_size", 1), ("warmup", 0), ("repeats", 1),
                         ("threads", 1)):
            if getattr(self, key) is not None and getattr(self, key) < low:
                raise WorkbenchError(f"profile: {key} must be at least {low}, got {getattr(self, key)}")


@dataclass
class ProfileReport:
    """A profile of one engine on one device: per phase, rows keyed by canonical node names."""

    model: str
    architecture: str
    dtype: str
    device: str
    device_name: str
    config: ProfileConfig
    phases: dict[str, PhaseProfile]
    nvtx: str = "off"  # the NVTX backend that was active while timing
    torch_version: str = torch.__version__
    threads: int = 0  # CPU threads torch used
    version: int = REPORT_VERSION
    backend: str = "torch"
    fused: dict[str, str] = field(default_factory=dict)  # name -> the row whose fused statement computes it

    def to_dict(self) -> dict:
        """JSON-safe form (spans as [name, step, repeat, start_us, dur_us] lists)."""
        d = asdict(self)
        for ph in d["phases"].values():
            for holder in [ph] + ([ph["baseline"]] if ph["baseline"] else []):
                for key in ("spans", "step_spans"):
                    holder[key] = [[s["name"], s["step"], s["repeat"], s["start_us"], s["dur_us"]] for s in holder[key]]
        d["config"]["phases"] = list(self.config.phases)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ProfileReport":
        """Inverse of to_dict."""
        if d.get("version") != REPORT_VERSION:
            raise WorkbenchError(f"profile report version {d.get('version')!r}; this workbench reads {REPORT_VERSION}")
        cfg = dict(d["config"])
        cfg["phases"] = tuple(cfg["phases"])
        phases = {k: _phase_from_dict(v) for k, v in d["phases"].items()}
        rest = {k: v for k, v in d.items() if k not in ("config", "phases")}
        return cls(config=ProfileConfig(**cfg), phases=phases, **rest)

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ProfileReport":
        """Read a report written by save."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise WorkbenchError(f"{path}: not a readable profile report ({e})") from None


def _stat(d: dict) -> Stat:
    return Stat(**d)


def _row(d: dict) -> Row:
    return Row(**{**d, "time": _stat(d["time"])})


def _spans(items: list) -> list[Span]:
    return [Span(*s) for s in items]


def _phase_from_dict(d: dict) -> PhaseProfile:
    base = d.get("baseline")
    if base is not None:
        base = BaselineProfile(step_time=_stat(base["step_time"]), names={k: _row(v) for k, v in base["names"].items()},
                               spans=_spans(base["spans"]), step_spans=_spans(base["step_spans"]),
                               attn_implementation=base.get("attn_implementation", "eager"))
    return PhaseProfile(
        phase=d["phase"], num_tokens=d["num_tokens"], past_lens=list(d["past_lens"]), step_time=_stat(d["step_time"]),
        hooked_step_time=_stat(d["hooked_step_time"]), nodes={k: _row(v) for k, v in d["nodes"].items()},
        layers={k: _row(v) for k, v in d["layers"].items()}, kinds={k: _row(v) for k, v in d["kinds"].items()},
        names={k: NameRow(k, _stat(v["total"]), _stat(v["own"]), v["share"]) for k, v in d["names"].items()},
        spans=_spans(d["spans"]), step_spans=_spans(d["step_spans"]), baseline=base,
        graph_step_time=_stat(d["graph_step_time"]) if d.get("graph_step_time") else None)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary sibling and a rename."""
    return atomic_write(path, text)


# -- clocks and the timing hook -------------------------------------------------------------------


class Clock:
    """Marks on one timeline: CUDA events on a GPU (device time), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._pool: list = []
        self._used = 0
        if self.cuda:
            torch.cuda.synchronize(device)
            self.origin = torch.cuda.Event(enable_timing=True)
            self.origin.record()
        else:
            self.origin = time.perf_counter()

    def mark(self):
        """A point in time (an event recorded on the current stream, or a perf_counter value)."""
        if not self.cuda:
            return time.perf_counter()
        if self._used == len(self._pool):
            self._pool.append(torch.cuda.Event(enable_timing=True))
        e = self._pool[self._used]
        self._used += 1
        e.record()
        return e

    def sync(self) -> None:
        """Wait for the device; call before reading marks."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def recycle(self) -> None:
        """Marks read so far may be reused (after sync and reading them)."""
        self._used = 0

    def ms(self, mark) -> float:
        """Milliseconds from the origin to a mark (after sync)."""
        return self.origin.elapsed_time(mark) if self.cuda else (mark - self.origin) * 1e3


class NodeTimer:
    """The executor's node hook: a start and an end mark around every node."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.marks: list[tuple[str, object, object]] = []

    def __call__(self, name: str, thunk):
        mark = self.clock.mark
        start = mark()
        out = thunk()
        self.marks.append((name, start, mark()))
        return out

    def read(self) -> list[tuple[str, float, float]]:
        """(name, start_ms, end_ms) of the nodes timed since the last read (call after clock.sync)."""
        ms = self.clock.ms
        out = [(name, ms(s), ms(e)) for name, s, e in self.marks]
        self.marks = []
        return out


# -- the engine's phases ----------------------------------------------------------------------


@dataclass
class _Step:
    ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttentionMeta


class _Samples:
    """Node times per sample (one sample = one timed step), and the spans for the timeline."""

    def __init__(self):
        self.node_ms: dict[str, list[float]] = {}
        self.step_ms: list[float] = []
        self.hooked_ms: list[float] = []
        self.spans: list[Span] = []
        self.step_spans: list[Span] = []

    def add(self, step: int, repeat: int, nodes: list[tuple[str, float, float]], hooked: tuple[float, float]) -> None:
        for name, s, e in nodes:
            self.node_ms.setdefault(name, []).append(e - s)
            self.spans.append(Span(name, step, repeat, s * 1e3, (e - s) * 1e3))
        self.step_spans.append(Span(f"step {step}", step, repeat, hooked[0] * 1e3, (hooked[1] - hooked[0]) * 1e3))
        self.hooked_ms.append(hooked[1] - hooked[0])


def _kv_layout(engine: Engine) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) from the graph's attention nodes."""
    atts = [n.attrs for n in engine.network.nodes.values() if n.op == "attention"]
    if not atts:
        raise WorkbenchError("profile: the engine has no attention node, so there is no KV cache to run decode steps with")
    return max(a["layer"] for a in atts) + 1, atts[0]["num_kv_heads"], atts[0]["head_dim"]


def token_ids(config: ProfileConfig, vocab: int) -> torch.Tensor:
    """Random prompt and decode tokens [B, P + N] (the values do not change the timings)."""
    g = torch.Generator().manual_seed(config.seed)
    return torch.randint(0, vocab, (config.batch_size, config.prompt_len + config.steps), generator=g)


def _steps(config: ProfileConfig, ids: torch.Tensor, cache, device) -> tuple[_Step, list[_Step]]:
    """The context step and the decode steps over one paged cache holding B sequences."""
    b, p = config.batch_size, config.prompt_len
    seqs = list(range(b))
    ctx = _Step(ids[:, :p].reshape(-1).to(device), torch.arange(p).repeat(b).to(device),
                AttentionMeta(seqs, [p] * b, [0] * b, cache))
    decode = [_Step(ids[:, p + s].to(device), torch.full((b,), p + s, dtype=torch.int64).to(device),
                    AttentionMeta(seqs, [1] * b, [p + s] * b, cache)) for s in range(config.steps)]
    return ctx, decode


def _time_phase(executor: Executor, phase: str, steps: list[_Step], config: ProfileConfig, clock: Clock,
                nvtx: NvtxRanges) -> _Samples:
    """Warm up, then per repeat and step: one run with no hook, one with the timing hook."""
    timer = NodeTimer(clock)
    out = _Samples()
    for _ in range(config.warmup):
        for st in steps:
            executor.run(st.ids, st.positions, st.meta)
    clock.sync()
    for r in range(config.repeats):
        for i, st in enumerate(steps):
            clock.recycle()
            a = clock.mark()
            executor.run(st.ids, st.positions, st.meta)
            b = clock.mark()
            clock.sync()
            out.step_ms.append(clock.ms(b) - clock.ms(a))
            clock.recycle()
            with nvtx.step(executor, phase, i, inner=timer):
                a = clock.mark()
                executor.run(st.ids, st.positions, st.meta)
                b = clock.mark()
            clock.sync()
            out.add(i, r, timer.read(), (clock.ms(a), clock.ms(b)))
    return out


def _mean_costs(costs: list[dict[str, OpCost]], name: str) -> tuple[float | None, float | None]:
    flops = [c[name].flops for c in costs if name in c]
    moved = [c[name].bytes for c in costs if name in c]
    mean = lambda xs: None if not xs or any(x is None for x in xs) else sum(xs) / len(xs)  # noqa: E731
    return mean(flops), mean(moved)


def _group_rows(groups: dict[str, list[str]], node_ms: dict[str, list[float]], n: int,
                costs: list[dict[str, OpCost]] | None = None) -> dict[str, Row]:
    """One row per group: per-sample sums of its nodes' times, then the statistics; shares of the total."""
    rows = {}
    for g, members in groups.items():
        members = [m for m in members if m in node_ms]
        if not members:
            continue
        samples = [sum(node_ms[m][j] for m in members) for j in range(n)]
        flops = moved = None
        if costs:
            parts = [_mean_costs(costs, m) for m in members]
            fl = [f for f, _ in parts if f is not None]
            by = [b for _, b in parts if b is not None]
            flops, moved = (sum(fl) if fl else None), (sum(by) if by else None)
        rows[g] = Row(g, Stat.of(samples), 0.0, flops=flops, bytes=moved)
    total = sum(r.time.median_ms for r in rows.values())
    for r in rows.values():
        r.share = r.time.median_ms / total if total > 0 else 0.0
    return rows


def _name_rows(order: list[str], node_ms: dict[str, list[float]], n: int, canon: list[str]) -> dict[str, NameRow]:
    """Inclusive and own time of every canonical name present in the graph."""
    present = [c for c in canon if c in node_ms]
    own_groups: dict[str, list[str]] = {}
    pending: list[str] = []
    canon_set = set(present)
    for name in order:
        pending.append(name)
        if name in canon_set:
            own_groups[name] = pending
            pending = []
    total_groups = {c: [m for m in order if m == c or m.startswith(c + ".")] for c in present}
    own = _group_rows(own_groups, node_ms, n)
    total = _group_rows(total_groups, node_ms, n)
    attributed = sum(sum(node_ms[m][j] for m in order) for j in range(n)) / n if n else 0.0
    return {c: NameRow(c, total[c].time, own[c].time,
                       total[c].time.median_ms / attributed if attributed > 0 else 0.0) for c in present}


def _phase_profile(engine: Engine, phase: str, samples: _Samples, costs: list[dict[str, OpCost]], num_tokens: int,
                   past_lens: list[int], ops: dict[str, tuple[str, str]]) -> PhaseProfile:
    order = [n for n in samples.node_ms]  # execution order (dicts keep insertion order)
    n = len(samples.hooked_ms)
    nodes = {}
    for name in order:
        op, kind = ops.get(name) or (engine.network.nodes[name].op, op_kind(engine.network.nodes[name].op))
        flops, moved = _mean_costs(costs, name)
        nodes[name] = Row(name, Stat.of(samples.node_ms[name]), 0.0, op=op, kind=kind, flops=flops, bytes=moved)
    total = sum(r.time.median_ms for r in nodes.values())
    for r in nodes.values():
        r.share = r.time.median_ms / total if total > 0 else 0.0
    layer_groups: dict[str, list[str]] = {}
    kind_groups: dict[str, list[str]] = {k: [] for k in KINDS}
    for name in order:
        layer_groups.setdefault(layer_group(name), []).append(name)
        kind_groups.setdefault(nodes[name].kind, []).append(name)
    num_layers = sum(1 for g in layer_groups if g.startswith("layers."))
    return PhaseProfile(
        phase=phase, num_tokens=num_tokens, past_lens=past_lens, step_time=Stat.of(samples.step_ms),
        hooked_step_time=Stat.of(samples.hooked_ms), nodes=nodes,
        layers=_group_rows(layer_groups, samples.node_ms, n, costs),
        kinds=_group_rows(kind_groups, samples.node_ms, n, costs),
        names=_name_rows(order, samples.node_ms, n, canonical_names(num_layers)),
        spans=samples.spans, step_spans=samples.step_spans)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def quiet_timing(threads: int | None):
    """Fixed torch CPU threads (if given) and no garbage collection inside timed steps; yields the thread count."""
    threads_before = torch.get_num_threads()
    gc_was_enabled = gc.isenabled()
    if threads:
        torch.set_num_threads(threads)
    gc.collect()
    gc.disable()  # a collection inside a timed step is noise, not the engine
    try:
        yield torch.get_num_threads()
    finally:
        if gc_was_enabled:
            gc.enable()
        torch.set_num_threads(threads_before)


@torch.inference_mode()
def _engine_phases(executor: Executor, config: ProfileConfig, ids: torch.Tensor, clock: Clock,
                   nvtx: NvtxRanges) -> dict[str, PhaseProfile]:
    """Time the phases through a paged KV cache made for them and freed afterwards."""
    engine, device = executor.engine, executor.device
    dtype = torch_dtype(engine.build_config.dtype)
    num_layers, kv_heads, head_dim = _kv_layout(engine)
    page = engine.build_config.kv_page_size
    b, p, n = config.batch_size, config.prompt_len, config.steps
    cache = PagedKVCache(num_layers, kv_heads, head_dim, num_blocks=b * -(-(p + n) // page), page_size=page,
                         dtype=dtype, device=device)
    kv_es = torch.empty(0, dtype=dtype).element_size()
    # an executor that times fused statements (inspect.cuda_profile) names their rows and sums their nodes' costs
    fold, ops = getattr(executor, "fold_costs", lambda c: c), getattr(executor, "row_ops", {})
    phases: dict[str, PhaseProfile] = {}
    try:
        cache.reserve_all({s: p + n for s in range(b)})
        ctx, decode = _steps(config, ids, cache, device)
        if "context" in config.phases:
            samples = _time_phase(executor, "context", [ctx], config, clock, nvtx)
            costs = [fold(step_costs(engine.network, [p] * b, [0] * b, kv_es))]
            phases["context"] = _phase_profile(engine, "context", samples, costs, b * p, [0], ops)
        else:
            executor.run(ctx.ids, ctx.positions, ctx.meta)  # fill the cache the decode steps read
        if "generation" in config.phases:
            samples = _time_phase(executor, "generation", decode, config, clock, nvtx)
            costs = [fold(step_costs(engine.network, [1] * b, [p + s] * b, kv_es)) for s in range(n)]
            phases["generation"] = _phase_profile(engine, "generation", samples, costs, b, [p + s for s in range(n)], ops)
    finally:
        cache.release_all()  # the cache itself goes with this frame
    return phases


def profile_engine(engine: Engine, config: ProfileConfig | None = None, *, device: str | torch.device = "cpu",
                   executor: Executor | None = None) -> ProfileReport:
    """Time every node of the engine in the context and/or generation phase (and the HF baseline if asked)."""
    config = config or ProfileConfig()
    config.check()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError("profile: --device cuda but CUDA is not available on this machine")
    limit = engine.build_config.max_seq_len
    if config.prompt_len + config.steps > limit:
        raise WorkbenchError(f"profile: prompt length {config.prompt_len} + {config.steps} steps exceeds the engine's "
                             f"max_seq_len {limit}")
    executor = executor or Executor(engine, device)
    device = executor.device
    ids = token_ids(config, int(engine.model_config.get("vocab_size", 2)))
    nvtx = NvtxRanges(config.nvtx)
    clock = Clock(device)
    with quiet_timing(config.threads) as threads_used:
        phases = _engine_phases(executor, config, ids, clock, nvtx)
    report = ProfileReport(
        model=str(engine.path or engine.source.get("checkpoint", "")), architecture=engine.architecture,
        dtype=engine.build_config.dtype, device=str(device), device_name=_device_name(device), config=config,
        phases=phases, nvtx=nvtx.backend, threads=threads_used)
    if config.baseline:
        from workbench.inspect.hf_profile import add_baseline

        add_baseline(report, engine)
    return report


# -- joining with other reports by name -------------------------------------------------------


def profile_columns(report: ProfileReport, phase: str = "context") -> dict[str, dict]:
    """Per canonical name, JSON-safe profile columns of one phase (to show beside a diff row of that name)."""
    if phase not in report.phases:
        raise WorkbenchError(f"the profile has no {phase} phase; it has {', '.join(report.phases) or 'none'}")
    ph = report.phases[phase]
    out = {}
    for name, row in ph.names.items():
        node = ph.nodes.get(name)
        cols = {"phase": phase, "total_ms": row.total.median_ms, "own_ms": row.own.median_ms, "share": row.share,
                "total_min_ms": row.total.min_ms, "total_max_ms": row.total.max_ms}
        if node is not None:
            cols.update(op=node.op, kind=node.kind, node_ms=node.time.median_ms, flops=node.flops, bytes=node.bytes,
                        tflops=node.tflops, gbps=node.gbps)
        if ph.baseline is not None and name in ph.baseline.names:
            cols["hf_ms"] = ph.baseline.names[name].time.median_ms
        out[name] = cols
    return out


def merge_by_name(rows: Mapping[str, Mapping], report: ProfileReport, phase: str = "context",
                  key: str = "profile") -> dict[str, dict]:
    """Each row of `rows` (a diff report's, by canonical name) as a dict with the profile's columns under `key`.

    Names the profile lacks get `key: None`; the input rows are not modified.
    """
    cols = profile_columns(report, phase)
    return {name: {**dict(row), key: cols.get(name)} for name, row in rows.items()}
