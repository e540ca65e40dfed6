"""A profile as a Chrome trace-event timeline (Perfetto, chrome://tracing) and as a data summary for the CLI.

Trace layout: process 1 is the engine, process 2 the HF baseline (when profiled); in
each, one thread (track) per phase: tid 1 context, tid 2 generation. Every timed step is
a complete event ("ph": "X") named `step <i>`, holding one event per decode layer
(`layers.3`), holding one event per node (`layers.3.attn.core`); ts and dur are in
microseconds since that process's profile started (both start at 0, to line them up by
eye). Steps run with no hook (the end-to-end timings) leave gaps between the timed steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from workbench.fsutil import atomic_write
from workbench.inspect.profile_report import PhaseProfile, ProfileReport, Row, Span, Stat
from workbench.names import canonical_names, layer_index
from workbench.runtime.nvtx import layer_group

PHASE_TIDS = {"context": 1, "generation": 2}
ENGINE_PID, BASELINE_PID = 1, 2


def _us(x: float) -> float:
    return round(x, 3)


def _complete(name: str, cat: str, start_us: float, end_us: float, pid: int, tid: int, args: dict | None = None) -> dict:
    ts = _us(start_us)
    ev = {"name": name, "cat": cat, "ph": "X", "ts": ts, "dur": _us(_us(end_us) - ts), "pid": pid, "tid": tid}
    if args:
        ev["args"] = args
    return ev


def _metadata(pid: int, process: str, phases: list[str], sort: int) -> list[dict]:
    evs = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": process}},
           {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": sort}}]
    for phase in phases:
        tid = PHASE_TIDS[phase]
        evs.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": phase}})
        evs.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    return evs


def _by_sample(spans: list[Span]) -> dict[tuple[int, int], list[Span]]:
    out: dict[tuple[int, int], list[Span]] = {}
    for s in spans:
        out.setdefault((s.repeat, s.step), []).append(s)
    return out


def _engine_events(ph: PhaseProfile, pid: int) -> list[dict]:
    tid = PHASE_TIDS[ph.phase]
    evs = []
    for st in ph.step_spans:
        past = ph.past_lens[st.step] if st.step < len(ph.past_lens) else None
        evs.append(_complete(st.name, "step", st.start_us, st.start_us + st.dur_us, pid, tid,
                             {"phase": ph.phase, "repeat": st.repeat, "past_len": past, "tokens": ph.num_tokens}))
    for spans in _by_sample(ph.spans).values():
        layers: dict[str, list[float]] = {}
        for s in spans:
            node = ph.nodes.get(s.name)
            args = {"op": node.op, "kind": node.kind} if node else {}
            if node is not None and node.flops:
                args["flops"] = node.flops
            if node is not None and node.bytes:
                args["bytes"] = node.bytes
            evs.append(_complete(s.name, node.kind if node else "node", s.start_us, s.start_us + s.dur_us, pid, tid, args))
            if layer_index(s.name) is not None:
                lo_hi = layers.setdefault(layer_group(s.name), [_us(s.start_us), _us(s.start_us + s.dur_us)])
                lo_hi[0] = min(lo_hi[0], _us(s.start_us))
                lo_hi[1] = max(lo_hi[1], _us(s.start_us + s.dur_us))
        for name, (lo, hi) in layers.items():
            evs.append(_complete(name, "layer", lo, hi, pid, tid))
    return evs


def _baseline_events(ph: PhaseProfile, pid: int) -> list[dict]:
    tid = PHASE_TIDS[ph.phase]
    evs = [_complete(st.name, "step", st.start_us, st.start_us + st.dur_us, pid, tid,
                     {"phase": ph.phase, "repeat": st.repeat}) for st in ph.baseline.step_spans]
    for s in ph.baseline.spans:
        cat = "layer" if layer_group(s.name) == s.name and s.name.startswith("layers.") else "hf_module"
        evs.append(_complete(s.name, cat, s.start_us, s.start_us + s.dur_us, pid, tid))
    return evs


def chrome_trace(report: ProfileReport) -> dict:
    """The report's timeline as a trace-event JSON object ({"traceEvents": [...], ...})."""
    phases = [p for p in PHASE_TIDS if p in report.phases]
    events = _metadata(ENGINE_PID, f"engine {Path(report.model).name or report.model} ({report.device})", phases, 1)
    for phase in phases:
        events += _engine_events(report.phases[phase], ENGINE_PID)
    with_base = [p for p in phases if report.phases[p].baseline is not None]
    if with_base:
        events += _metadata(BASELINE_PID, f"HF baseline ({report.device})", with_base, 2)
        for phase in with_base:
            events += _baseline_events(report.phases[phase], BASELINE_PID)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"model": report.model, "device": report.device, "device_name": report.device_name,
                          "dtype": report.dtype, "nvtx": report.nvtx, "torch": report.torch_version,
                          "backend": report.backend}}


def write_chrome_trace(report: ProfileReport, path: str | Path) -> Path:
    """Write chrome_trace(report) to `path` atomically."""
    return atomic_write(path, json.dumps(chrome_trace(report)))


# -- the summary the CLI renders ----------------------------------------------------------------


@dataclass
class VersusRow:
    """One layer's (or canonical name's) median time in the engine and in the HF baseline."""

    name: str
    engine_ms: float
    hf_ms: float | None

    @property
    def speedup(self) -> float | None:
        """HF time / engine time (> 1: the engine is faster)."""
        return self.hf_ms / self.engine_ms if self.hf_ms and self.engine_ms > 0 else None


@dataclass
class PhaseSummary:
    """The headline numbers and top rows of one phase."""

    phase: str
    num_tokens: int
    step_time: Stat
    hooked_step_time: Stat
    tokens_per_s: float
    attributed_ms: float
    coverage: float
    top_layers: list[Row]
    kinds: list[Row]
    top_nodes: list[Row]
    compute: list[Row]  # GEMM and attention nodes, slowest first, with rates
    hf_step_time: Stat | None = None
    versus_hf: list[VersusRow] = field(default_factory=list)
    graph_step_time: Stat | None = None  # cuda backend, generation: decode steps replayed back to back


@dataclass
class ProfileSummary:
    """What `wb profile` shows."""

    model: str
    device: str
    device_name: str
    dtype: str
    nvtx: str
    threads: int
    phases: list[PhaseSummary]
    backend: str = "torch"
    fused: dict[str, str] = field(default_factory=dict)  # canonical name -> the row whose fused statement computes it


def summarize_profile(report: ProfileReport, top: int = 8) -> ProfileSummary:
    """Top layers, op-kind breakdown, slowest nodes and the HF comparison of every phase."""
    phases = []
    for ph in report.phases.values():
        slow = lambda rows: sorted(rows, key=lambda r: r.time.median_ms, reverse=True)  # noqa: E731
        versus = []
        if ph.baseline is not None:
            versus = [VersusRow(name, row.time.median_ms,
                                ph.baseline.names[name].time.median_ms if name in ph.baseline.names else None)
                      for name, row in ph.layers.items()]
        phases.append(PhaseSummary(
            phase=ph.phase, num_tokens=ph.num_tokens, step_time=ph.step_time, hooked_step_time=ph.hooked_step_time,
            tokens_per_s=ph.tokens_per_s, attributed_ms=ph.attributed_ms, coverage=ph.coverage,
            top_layers=slow(ph.layers.values())[:top],
            kinds=[r for r in slow(ph.kinds.values()) if r.time.median_ms > 0],
            top_nodes=slow(ph.nodes.values())[:top],
            compute=slow(r for r in ph.nodes.values() if r.kind in ("gemm", "attention"))[:top],
            hf_step_time=ph.baseline.step_time if ph.baseline else None, versus_hf=versus,
            graph_step_time=ph.graph_step_time))
    num_layers = 1 + max((layer_index(n) or 0 for ph in report.phases.values() for n in ph.nodes), default=-1)
    canon = set(canonical_names(num_layers))
    return ProfileSummary(model=report.model, device=report.device, device_name=report.device_name, dtype=report.dtype,
                          nvtx=report.nvtx, threads=report.threads, phases=phases, backend=report.backend,
                          fused={k: v for k, v in report.fused.items() if k in canon})
