"""What a profile returns: per-phase rows of timings under canonical names, their JSON form, and their columns by name.

`profiler.profile_engine` fills these; `timeline`, the CLI and the TUI read them. A report
saved with `ProfileReport.save` reads back with `ProfileReport.load` (same `REPORT_VERSION`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_write

PHASES = ("context", "generation")
KINDS = ("attention", "gemm", "norm", "elementwise", "data")
REPORT_VERSION = 1


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
        return atomic_write(path, json.dumps(self.to_dict(), indent=1))

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
