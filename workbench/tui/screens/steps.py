"""The step picker: the context phase and each generation step, with how many names pass there."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from workbench.inspect.diff import DiffReport
from workbench.tui.format import where


class StepScreen(ModalScreen[int | None]):
    """Dismissed with the chosen step, or None on escape."""

    CSS_PATH = "../styles/dialogs.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, reports: list[DiffReport], current: int) -> None:
        super().__init__()
        self.reports, self.current = reports, current

    def compose(self) -> ComposeResult:
        options = []
        for r in self.reports:
            n_pass = sum(row.passed for row in r.rows)
            mark = "✓" if n_pass == len(r.rows) else "✗"
            options.append(Option(f"{mark} step {r.step}: {where(r.step)}, {len(r.positions)} position"
                                  f"{'s' * (len(r.positions) != 1)}, {n_pass}/{len(r.rows)} pass", id=str(r.step)))
        with Vertical(id="steps", classes="dialog"):
            yield Static("[b]Choose a step[/b]  (enter picks, escape cancels)", classes="dialog-title")
            yield OptionList(*options, id="step-list")

    def on_mount(self) -> None:
        steps = [r.step for r in self.reports]
        if self.current in steps:
            self.query_one(OptionList).highlighted = steps.index(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))

    def action_cancel(self) -> None:
        self.dismiss(None)
