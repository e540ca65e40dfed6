"""The help screen: every key of the main screen, by group, and what the colours mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from workbench.tui.keys import ACTIONS

LEGEND = ("Colours: [green]✓ pass[/], [bold red]✗ FAIL[/], [dim]· not marked (not diffed)[/], "
          "[yellow]◀[/] the first divergence. Percentages are each name's share of the step's time "
          "(context phase at step 0, generation phase after).\n"
          "Modes: accumulated = the engine end to end; local = every node fed HF's inputs, so a row shows only "
          "the error its own node adds.\n"
          "Backends: the header names the one the numbers came from (torch: the reference; cuda: the fast path) "
          "and, as \"reruns: ...\", the one r and k run on where it is another; b reruns on the other one.")


def keys_table() -> Table:
    """The keys, grouped as in keys.ACTIONS."""
    t = Table(box=None, padding=(0, 2), show_header=False)
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(style="dim")
    group = None
    for a in ACTIONS:
        if a.group != group:
            group = a.group
            t.add_row(Text(group, style="bold underline"), "", "")
        t.add_row(a.shown, a.title, a.help)
    t.add_row(Text("App", style="bold underline"), "", "")
    t.add_row("tab", "Next pane", "Move focus between the tree and the table")
    t.add_row("ctrl+p", "Command palette", "Every action above, and jump to any name")
    t.add_row("q", "Quit", "")
    return t


class HelpScreen(ModalScreen[None]):
    """Closed with escape, q or ?."""

    CSS_PATH = "../styles/dialogs.tcss"
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="dialog"):
            yield Static("[b]wb tui: keys[/b]   (escape closes)", classes="dialog-title")
            yield Static(keys_table(), id="help-keys")
            yield Static(LEGEND, classes="legend")

    def action_dismiss(self, result=None) -> None:
        self.dismiss(None)
