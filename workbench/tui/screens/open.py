"""The open dialog: type a session path or pick one of the .wbs files found nearby."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option


def nearby_sessions(folder: Path | None) -> list[Path]:
    """The .wbs files in the working directory, ./sessions and `folder`, sorted, without duplicates."""
    seen: dict[Path, None] = {}
    for d in (Path("."), Path("sessions"), folder):
        if d is not None and d.is_dir():
            for p in sorted(d.glob("*.wbs")):
                seen.setdefault(p, None)
    return list(seen)


class OpenScreen(ModalScreen[str | None]):
    """Dismissed with a path, or None."""

    CSS_PATH = "../styles/dialogs.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.found = nearby_sessions(folder)

    def compose(self) -> ComposeResult:
        with Vertical(id="open", classes="dialog"):
            yield Static("[b]Open a session[/b]  (enter opens, escape cancels)", classes="dialog-title")
            yield Input(placeholder="path/to/name.wbs", id="path")
            if self.found:
                yield OptionList(*[Option(Text(str(p)), id=str(i)) for i, p in enumerate(self.found)], id="found")
            else:
                yield Static("No .wbs files here, in ./sessions or beside the open session.", classes="legend")
            yield Static("", id="open-hint", classes="legend")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not Path(path).is_file():
            self.query_one("#open-hint", Static).update(Text(f"{path or '(empty)'}: no such file", style="red"))
            return
        self.dismiss(path)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(str(self.found[int(event.option.id)]))

    def action_cancel(self) -> None:
        self.dismiss(None)
