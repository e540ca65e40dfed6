"""The mark dialog: patterns of names to add as engine outputs before rebuilding and rerunning."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from workbench.errors import PatternError
from workbench.names import match


class MarkScreen(ModalScreen[list[str] | None]):
    """Dismissed with the patterns to mark, or None."""

    CSS_PATH = "../styles/dialogs.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, names: list[str], unmarked: list[str], value: str = "") -> None:
        super().__init__()
        self.names, self.unmarked, self.value = names, unmarked, value

    def compose(self) -> ComposeResult:
        if self.unmarked:
            listed = ", ".join(self.unmarked[:8]) + (f", ... ({len(self.unmarked)} in all)"
                                                     if len(self.unmarked) > 8 else "")
            hint = f"Not marked yet: {listed}"
        else:
            hint = "Every diffable name is marked already; rerunning rebuilds and reruns as is."
        with Vertical(id="mark", classes="dialog"):
            yield Static("[b]Mark names, rebuild and rerun[/b]", classes="dialog-title")
            yield Static("Patterns, comma separated: 12.attn, *.mlp, layers.3-7, all", classes="legend")
            yield Input(value=self.value, placeholder="e.g. 1.mlp, *.attn.core", id="patterns")
            yield Static(Text(hint), id="mark-hint", classes="legend")
            with Horizontal(classes="buttons"):
                yield Button("Rebuild and rerun", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#mark-hint", Static).update(self._check(event.value)[1])

    def _check(self, value: str) -> tuple[list[str], Text]:
        """The patterns typed (empty when they select nothing) and a line saying what they select."""
        patterns = [p.strip() for p in value.split(",") if p.strip()]
        if not patterns:
            return [], Text("Type a pattern.")
        try:
            chosen = match(patterns, self.names)
        except PatternError as e:
            return [], Text(str(e), style="red")
        new = [n for n in chosen if n in self.unmarked]
        return patterns, Text(f"{len(chosen)} names, {len(new)} not marked yet: {', '.join(new[:6])}"
                              + (" ..." if len(new) > 6 else ""))

    def _submit(self) -> None:
        patterns, message = self._check(self.query_one(Input).value)
        if patterns:
            self.dismiss(patterns)
        else:
            self.query_one("#mark-hint", Static).update(message)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
