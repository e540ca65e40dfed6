"""The diff table: one row per diffed name with every comparator metric, its verdict and its share of time."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from workbench.inspect.diff import DiffReport, DiffRow
from workbench.inspect.divergence import LayerDivergence
from workbench.tui.format import FAIL_STYLE, JUMP_STYLE, num, pct, verdict

# (key, header): every number of TensorMetrics that fits in a cell; the detail pane shows the rest
COLUMNS = [
    ("name", "name"), ("result", "result"), ("max_abs", "max |err|"), ("mean_abs", "mean |err|"),
    ("median_abs", "median |err|"), ("q_abs", "q |err|"), ("max_rel", "max rel"), ("mean_rel", "mean rel"),
    ("median_rel", "median rel"), ("q_rel", "q rel"), ("rel_l2", "rel L2"), ("cosine", "cosine"),
    ("sqnr", "SQNR dB"), ("outside", "outside"), ("nonfinite", "NaN/Inf"), ("time", "time"), ("note", "note"),
]


def _cells(row: DiffRow, share: float | None, note: str) -> list:
    m = row.metrics
    nonfinite = m.nan_engine + m.inf_engine + m.nan_ref + m.inf_ref
    cosine = "nan" if m.cosine != m.cosine else f"{m.cosine:.6f}"
    name = Text(row.name, style=None if row.passed else FAIL_STYLE)
    return [name, verdict(row.passed), num(m.max_abs_err), num(m.mean_abs_err), num(m.median_abs_err),
            num(m.quantile_abs_err), num(m.max_rel_err), num(m.mean_rel_err), num(m.median_rel_err),
            num(m.quantile_rel_err), num(m.rel_l2), cosine, num(m.sqnr_db),
            f"{m.frac_outside * 100:.3g}%" if m.frac_outside else "0",
            str(nonfinite) if nonfinite else "", pct(share), Text(note, style=JUMP_STYLE)]


def notes(divergence: LayerDivergence | None) -> dict[str, str]:
    """The note column: where the first failure and the first error jump are."""
    out: dict[str, str] = {}
    if divergence is None:
        return out
    if divergence.first_failing:
        out[divergence.first_failing] = "◀ first failure"
    if divergence.first_jump:
        jump = f"error jumps ×{num(divergence.jump_ratio)}"
        out[divergence.first_jump] = out[divergence.first_jump] + ", " + jump if divergence.first_jump in out \
            else "◀ " + jump
    return out


class DiffTable(DataTable):
    """The rows of one report; the cursor row is the selected name."""

    class NameHighlighted(Message):
        """The cursor moved to a name."""

        def __init__(self, chosen: str) -> None:
            super().__init__()
            self.chosen = chosen

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.fixed_columns = 1
        self._names: list[str] = []

    def on_mount(self) -> None:
        for key, header in COLUMNS:
            self.add_column(header, key=key)

    def show(self, report: DiffReport, shares: dict[str, float], divergence: LayerDivergence | None,
             selected: str | None) -> None:
        """Fill the table with a report's rows (in place when the names are the same) and keep `selected`."""
        quantile = report.rows[0].metrics.quantile if report.rows else 0.99
        self.columns["q_abs"].label = Text(f"p{quantile * 100:g} |err|")
        self.columns["q_rel"].label = Text(f"p{quantile * 100:g} rel")
        note = notes(divergence)
        with self.prevent(DataTable.RowHighlighted):
            # Rebuilding is cheaper than updating every cell, each of which refreshes the table.
            scroll = self.scroll_x
            self.clear()
            self._names = list(report.names)
            for row in report.rows:
                self.add_row(*_cells(row, shares.get(row.name), note.get(row.name, "")), key=row.name)
            self.scroll_x = scroll
            if selected in self._names:
                self.move_cursor(row=self._names.index(selected), animate=False)

    def select_name(self, name: str) -> None:
        """Move the cursor to a name's row without announcing it (a name not diffed leaves it where it is)."""
        if name in self._names:
            with self.prevent(DataTable.RowHighlighted):
                self.move_cursor(row=self._names.index(name), animate=False)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value is not None:
            self.post_message(self.NameHighlighted(event.row_key.value))
