"""Where the navigation keys go: pure functions over names and reports, so they are tested without a screen."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.inspect.diff import DiffReport
from workbench.names import layer_index
from workbench.tui.workspace import Workspace


def neighbour(names: list[str], current: str | None, delta: int, order: list[str] | None = None) -> str | None:
    """The name `delta` places from `current` (clamped at the ends).

    A `current` not among `names` (a name that was not diffed) counts from where it sits
    in `order` (every name, in layer order); unknown everywhere, from the ends.
    """
    if not names:
        return None
    if current in names:
        return names[max(0, min(len(names) - 1, names.index(current) + delta))]
    if order is not None and current in order:
        here = order.index(current)
        after = [n for n in names if n in order and order.index(n) > here]
        before = [n for n in names if n in order and order.index(n) < here]
        if delta > 0:
            return after[min(delta, len(after)) - 1] if after else names[-1]
        return before[max(len(before) + delta, 0)] if before else names[0]
    return names[0] if delta >= 0 else names[-1]


def _group(name: str) -> int:
    """Layer order of a name: embed before every layer, final_norm and logits after."""
    i = layer_index(name)
    if i is not None:
        return i
    return -1 if name == "embed" else 10**9


def layer_jump(names: list[str], current: str | None, delta: int) -> str | None:
    """The first name of the next (delta > 0) or previous layer group, or None at the end."""
    here = _group(current) if current is not None else -2
    groups = sorted({_group(n) for n in names})
    ahead = [g for g in groups if (g > here if delta > 0 else g < here)]
    if not ahead:
        return None
    target = ahead[0] if delta > 0 else ahead[-1]
    return next(n for n in names if _group(n) == target)


def next_failure(report: DiffReport, current: str | None) -> str | None:
    """The first failing name after `current` in the report, or None."""
    names = report.names
    start = names.index(current) + 1 if current in names else 0
    return next((r.name for r in report.rows[start:] if not r.passed), None)


@dataclass
class Divergence:
    """Where `f` goes: a step, a name, and why."""

    step: int
    name: str
    why: str


def first_divergence(ws: Workspace, mode: str, step: int) -> Divergence | None:
    """The first failing name (else the first error jump) at `step`, then at the other steps in order."""
    for s in [step] + [s for s in ws.steps if s != step]:
        d = ws.divergence(mode, s)
        if d is None:
            continue
        if d.first_failing:
            return Divergence(s, d.first_failing, f"first failure ({d.first_failing_reason})")
        if d.first_jump:
            return Divergence(s, d.first_jump, f"error jumps ×{d.jump_ratio:.3g}")
    return None
