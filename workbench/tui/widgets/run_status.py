"""The run bar: what the background worker is doing, with a progress bar; hidden when idle."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class RunStatus(Horizontal):
    """Shown while a worker runs: a title, the current stage and a progress bar."""

    def compose(self) -> ComposeResult:
        yield Label(id="run-title")
        yield ProgressBar(total=1, show_eta=False, id="run-bar")
        yield Label(id="run-stage")

    def start(self, title: str) -> None:
        self.query_one("#run-title", Label).update(Text(title))
        self.query_one("#run-stage", Label).update("starting")
        self.query_one(ProgressBar).update(total=1, progress=0)
        self.add_class("running")

    def step(self, stage: str, done: int, total: int) -> None:
        self.query_one("#run-stage", Label).update(Text(stage))
        self.query_one(ProgressBar).update(total=max(total, 1), progress=done)

    def finish(self) -> None:
        self.remove_class("running")
