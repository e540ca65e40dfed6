"""The save dialog: where to write the session (.wbs, with its tensors beside it)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class SaveScreen(ModalScreen[str | None]):
    """Dismissed with the path to write, or None."""

    CSS_PATH = "../styles/dialogs.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="save", classes="dialog"):
            yield Static("[b]Save the session[/b]", classes="dialog-title")
            yield Static("The reports, the timings and the captured tensors (NAME.wbs.safetensors beside it). "
                         "`wb replay` reruns it; `wb tui NAME.wbs` opens it.", classes="legend")
            yield Input(value=self.default, placeholder="path/to/name.wbs", id="path")
            yield Static("", id="save-hint", classes="legend")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def _submit(self) -> None:
        path = self.query_one(Input).value.strip()
        if not path.endswith(".wbs"):
            self.query_one("#save-hint", Static).update(Text("Session files end in .wbs", style="red"))
            return
        self.dismiss(path)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
