"""From timed samples to a phase's rows: per node, per layer, per op kind and per canonical name.

A sample is one timed step: every node's time in it, plus the step's own span. Group rows
(layers, kinds, names) sum their nodes' times within each sample before taking the
statistics, so a row's median is the median of its per-step totals.
"""

from __future__ import annotations

from workbench.builder.engine import Engine
from workbench.builder.ops import op_kind
from workbench.inspect.op_costs import OpCost
from workbench.inspect.profile_report import KINDS, NameRow, PhaseProfile, Row, Span, Stat
from workbench.names import canonical_names
from workbench.runtime.nvtx import layer_group


class Samples:
    """Node times per sample (one sample = one timed step), and the spans for the timeline."""

    def __init__(self):
        self.node_ms: dict[str, list[float]] = {}
        self.step_ms: list[float] = []
        self.hooked_ms: list[float] = []
        self.spans: list[Span] = []
        self.step_spans: list[Span] = []

    def add(self, step: int, repeat: int, nodes: list[tuple[str, float, float]], hooked: tuple[float, float]) -> None:
        """One hooked step: its nodes' (name, start_ms, end_ms) and its own (start_ms, end_ms)."""
        for name, s, e in nodes:
            self.node_ms.setdefault(name, []).append(e - s)
            self.spans.append(Span(name, step, repeat, s * 1e3, (e - s) * 1e3))
        self.step_spans.append(Span(f"step {step}", step, repeat, hooked[0] * 1e3, (hooked[1] - hooked[0]) * 1e3))
        self.hooked_ms.append(hooked[1] - hooked[0])


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


def phase_profile(engine: Engine, phase: str, samples: Samples, costs: list[dict[str, OpCost]], num_tokens: int,
                  past_lens: list[int], ops: dict[str, tuple[str, str]]) -> PhaseProfile:
    """The rows of one phase from its samples, its per-step op costs and (op, kind) overrides for named rows."""
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
