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

What a profile returns is in `profile_report`, the clocks in `profile_clock`, the rows made
from the timed samples in `profile_rows`; their names are importable from here too.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

from workbench.builder.engine import Engine
from workbench.builder.network import torch_dtype
from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_write
from workbench.inspect.op_costs import step_costs
from workbench.inspect.profile_clock import Clock, NodeTimer, quiet_timing
from workbench.inspect.profile_report import (KINDS, PHASES, REPORT_VERSION, BaselineProfile, NameRow, PhaseProfile,
                                              ProfileConfig, ProfileReport, Row, Span, Stat, merge_by_name,
                                              profile_columns)
from workbench.inspect.profile_rows import Samples, phase_profile
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.executor import Executor
from workbench.runtime.kv_cache import PagedKVCache
from workbench.runtime.nvtx import NvtxRanges

# the report, clock and row names stay importable from here, where callers have always found them
__all__ = ["KINDS", "PHASES", "REPORT_VERSION", "BaselineProfile", "Clock", "NameRow", "NodeTimer", "PhaseProfile",
           "ProfileConfig", "ProfileReport", "Row", "Span", "Stat", "merge_by_name", "profile_columns",
           "profile_engine", "quiet_timing", "token_ids", "write_text_atomic"]

write_text_atomic = atomic_write  # the name bench scripts import


@dataclass
class _Step:
    ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttentionMeta


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
                nvtx: NvtxRanges) -> Samples:
    """Warm up, then per repeat and step: one run with no hook, one with the timing hook."""
    timer = NodeTimer(clock)
    out = Samples()
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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


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
            phases["context"] = phase_profile(engine, "context", samples, costs, b * p, [0], ops)
        else:
            executor.run(ctx.ids, ctx.positions, ctx.meta)  # fill the cache the decode steps read
        if "generation" in config.phases:
            samples = _time_phase(executor, "generation", decode, config, clock, nvtx)
            costs = [fold(step_costs(engine.network, [1] * b, [p + s] * b, kv_es)) for s in range(n)]
            phases["generation"] = phase_profile(engine, "generation", samples, costs, b, [p + s for s in range(n)], ops)
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
