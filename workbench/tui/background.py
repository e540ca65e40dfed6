"""Slow work off the UI thread: one thread worker at a time, its progress on the run bar, its result applied.

A screen that mixes this in has a `RunStatus`, a `DetailPane`, a `ws` and an `apply(ws)`.
The job (from `jobs.py`) gets a `progress(stage, done, total)` callback; calling it from the
worker thread posts a message, which is thread-safe, so the UI answers keys meanwhile.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from rich.text import Text
from textual.message import Message
from textual.worker import Worker, WorkerState

from workbench.errors import WorkbenchError
from workbench.tui.widgets.detail import DetailPane
from workbench.tui.widgets.run_status import RunStatus
from workbench.tui.workspace import Workspace


class Progressed(Message):
    """A worker thread reached a stage."""

    def __init__(self, stage: str, done: int, total: int) -> None:
        super().__init__()
        self.stage, self.done, self.total = stage, done, total


class BackgroundRuns:
    """Mixed into a Screen: `start` a job; a Workspace result replaces the screen's, a Path says it was saved."""

    @property
    def busy(self) -> bool:
        return any(w.group == "run" and w.is_running for w in self.workers)

    def start(self, title: str, job, *args, **kwargs) -> bool:
        """Run `job(*args, progress=..., **kwargs)` in a thread, unless a run is going on already; True if started."""
        if self.busy:
            self.notify("A run is in progress; wait for it to finish.", severity="warning")
            return False
        self.query_one(RunStatus).start(title)
        progress = lambda stage, done, total: self.post_message(Progressed(stage, done, total))  # noqa: E731
        self.run_worker(partial(job, *args, progress=progress, **kwargs), name=title, group="run", thread=True,
                        exit_on_error=False)
        return True

    def on_progressed(self, message: Progressed) -> None:
        self.query_one(RunStatus).step(message.stage, message.done, message.total)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != "run" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        self.query_one(RunStatus).finish()
        if event.state == WorkerState.ERROR:
            error = worker.error
            text = str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {error}"
            self.notify(text, title=f"{worker.name} failed", severity="error", timeout=10)
            if self.ws is None:
                self.sub_title = f"{worker.name} failed"
                self.query_one(DetailPane).show(Text(f"{worker.name} failed:\n{text}", style="red"))
            return
        if isinstance(worker.result, Workspace):
            self.apply(worker.result)
        elif isinstance(worker.result, Path):
            self.notify(f"saved {worker.result}", title="session saved")
