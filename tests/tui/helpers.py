"""Helpers for Pilot tests: find the main screen and wait for the app's background worker."""

from __future__ import annotations

import time

from workbench.tui.screens.main import MainScreen


def main_screen(app) -> MainScreen:
    return next(s for s in app.screen_stack if isinstance(s, MainScreen))


async def wait_for(pilot, predicate, timeout: float = 60.0) -> None:
    """Pause until predicate() holds (the app keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)
    await pilot.pause()


async def loaded(pilot, timeout: float = 60.0) -> MainScreen:
    """Wait until the first workspace is shown and no run is going on; the main screen."""
    await wait_for(pilot, lambda: any(isinstance(s, MainScreen) for s in pilot.app.screen_stack), timeout)
    screen = main_screen(pilot.app)
    await wait_for(pilot, lambda: screen.ws is not None and not screen.busy, timeout)
    return screen


async def replaced(pilot, screen: MainScreen, old, timeout: float = 60.0) -> None:
    """Wait until a run has replaced the workspace `old`."""
    await wait_for(pilot, lambda: screen.ws is not old and not screen.busy, timeout)


async def settle(pilot):
    """For snap_compare's run_before: the session is loaded, and every table has sized its columns to its rows (a
    DataTable does that when it next idles: a screenshot taken before shows the headers' widths, as one did under a
    loaded CI machine)."""
    from textual.widgets import DataTable

    screen = await loaded(pilot)
    await wait_for(pilot, lambda: not any(t._require_update_dimensions for t in pilot.app.screen.query(DataTable)))
    return screen


def plain(screen, selector: str, width: int = 160) -> str:
    """The text a Static shows (its Rich content rendered without styles)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(screen.query_one(selector).content)
    return console.export_text()
