"""The `wb tui` app: one main screen over a workspace, the command palette and the quit key."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from workbench.tui.commands import WorkbenchCommands
from workbench.tui.screens.main import MainScreen
from workbench.tui.jobs import Target


class WorkbenchApp(App[None]):
    """Opens a session or runs a model (see workspace.Target) and shows it on the main screen."""

    CSS_PATH = "styles/app.tcss"
    TITLE = "wb tui"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS = [Binding("q", "quit", "Quit", key_display="q")]

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target

    def on_mount(self) -> None:
        self.push_screen(MainScreen(self.target))
