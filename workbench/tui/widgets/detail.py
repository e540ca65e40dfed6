"""The detail pane: one name's metrics, both sides' statistics, the error histogram and the worst values."""

from __future__ import annotations

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.inspect.diff import DiffRow
from workbench.inspect.metrics import TensorStats
from workbench.inspect.tensor_view import Coordinate, ErrorBin, TensorView
from workbench.tui.format import DIM_STYLE, FAIL_STYLE, JUMP_STYLE, bar, num, verdict

HIST_WIDTH = 20


def _table(title: str, *headers: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", box=None, padding=(0, 1), show_edge=False,
              header_style="bold dim")
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    return t


def _metrics(row: DiffRow) -> Table:
    m, v = row.metrics, row.verdict
    t = _table("metrics", "", "abs", "rel")
    t.add_row("max", num(m.max_abs_err), num(m.max_rel_err))
    t.add_row("mean", num(m.mean_abs_err), num(m.mean_rel_err))
    t.add_row("median", num(m.median_abs_err), num(m.median_rel_err))
    t.add_row(f"p{m.quantile * 100:g}", num(m.quantile_abs_err), num(m.quantile_rel_err))
    t.add_row("tolerance", num(v.atol), num(v.rtol))
    t.add_row("rel L2", num(m.rel_l2), "")
    t.add_row("cosine", "nan" if m.cosine != m.cosine else f"{m.cosine:.6f}", "")
    t.add_row("SQNR dB", num(m.sqnr_db), "")
    t.add_row("outside", f"{m.n_outside}/{m.numel}", "")
    if m.has_nonfinite_problem or m.inf_engine or m.inf_ref:
        t.add_row("NaN eng/HF", f"{m.nan_engine}/{m.nan_ref}", "")
        t.add_row("Inf eng/HF", f"{m.inf_engine}/{m.inf_ref}", f"{m.inf_mismatch} mismatch")
    return t


def _stats(a: TensorStats, b: TensorStats, extra: list[tuple[str, str, str]]) -> Table:
    t = _table("values", "", "engine", "HF")
    for key in ("min", "max", "mean", "std", "absmax"):
        t.add_row(key, num(getattr(a, key)), num(getattr(b, key)))
    for row in extra:
        t.add_row(*row)
    return t


def _histogram(bins: list[ErrorBin]) -> Table:
    t = _table("|error| histogram", "", "", "count")
    biggest = max((b.count for b in bins), default=0) or 1
    for b in bins:
        style = FAIL_STYLE if b.label == "inf/nan" else "cyan"
        t.add_row(b.label, Text(bar(b.count / biggest, HIST_WIDTH), style=style), str(b.count))
    return t


def _coords(title: str, coords: list[Coordinate], highlight: tuple[int, ...] | None = None) -> Table:
    t = _table(title, "index", "engine", "HF", "|err|", "rel")
    for c in coords:
        style = JUMP_STYLE if c.index == highlight else None
        t.add_row(str(list(c.index)), f"{c.engine:.6g}", f"{c.reference:.6g}", num(c.abs_err), num(c.rel_err),
                  style=style)
    return t


def render_detail(name: str, row: DiffRow | None, view: TensorView | None, note: str = "") -> RenderableType:
    """Everything known about one name, as one Rich renderable."""
    head = Text(name, style="bold")
    if row is None:
        head.append("  not diffed", style=DIM_STYLE)
        return Group(head, Text(note or "This name is not marked. Press k (or Enter in the tree) to mark it, "
                                "rebuild and rerun.", style=DIM_STYLE))
    m = row.metrics
    head.append("  ")
    head.append(verdict(row.passed))
    head.append(f"  {row.verdict.reason}", style=None if row.passed else FAIL_STYLE)
    shape = Text(f"shape {list(m.shape)}, worst at {list(m.max_abs_index)}, error statistic "
                 f"{row.verdict.error_stat}", style=DIM_STYLE)
    parts: list[RenderableType] = [head, shape]
    if view is None:
        parts.append(Columns([_metrics(row), _stats(m.engine_stats, m.ref_stats, [])], padding=(1, 3)))
        parts.append(Text(note or "No tensors for this name: histogram and values need a session with tensors "
                          "(press r to rerun).", style=DIM_STYLE))
        return Group(*parts)
    e, r = view.engine, view.reference
    extra = [("NaN", str(e.nan), str(r.nan)), ("Inf", str(e.inf), str(r.inf)), ("zeros", str(e.zeros), str(r.zeros))]
    parts.append(Columns([_metrics(row), _stats(e.stats, r.stats, extra), _histogram(view.histogram)], padding=(1, 3)))
    centre = view.worst[0].index if view.worst else None
    parts.append(Columns([_coords("worst coordinates", view.worst),
                          _coords(f"around the worst (axis {view.around_axis})", view.around, centre)],
                         padding=(1, 3)))
    if note:
        parts.append(Text(note, style=DIM_STYLE))
    return Group(*parts)


class DetailPane(VerticalScroll):
    """A scrolling view of `render_detail` for the selected name; `z` maximizes it."""

    ALLOW_MAXIMIZE = True

    def compose(self):
        yield Static(id="detail-body")

    def show(self, renderable: RenderableType) -> None:
        self.query_one("#detail-body", Static).update(renderable)
