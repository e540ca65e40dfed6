"""The background runs of `wb tui`: diff and profile an engine, mark and rerun, rerun a session, stay responsive."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from textual.widgets import Input, TabbedContent

from tests.tui.helpers import loaded, main_screen, plain, replaced, wait_for
from workbench.cli import main
from workbench.tui import jobs
from workbench.tui.app import WorkbenchApp
from workbench.tui.jobs import Target
from workbench.tui.screens.mark import MarkScreen
from workbench.tui.widgets.layer_tree import LayerTree
from workbench.tui.widgets.run_status import RunStatus

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


def engine_app(engine_dir, **kwargs) -> WorkbenchApp:
    spec = dict(model=str(engine_dir), patterns=["layers.0", "logits"], steps=(0, 1), profile=False)
    return WorkbenchApp(Target(**{**spec, **kwargs}))


async def test_an_engine_is_diffed_and_profiled_in_a_worker_then_marked_and_rerun(tiny_engine_dir):
    app = engine_app(tiny_engine_dir, profile=True, repeats=1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen_stack and main_screen(app).query(RunStatus))
        status = main_screen(app).query_one(RunStatus)
        await wait_for(pilot, lambda: status.has_class("running") or main_screen(app).ws is not None)
        screen = await loaded(pilot)
        assert not status.has_class("running")
        ws = screen.ws
        assert ws.names == ["layers.0", "logits"] and ws.steps == [0, 1] and ws.modes == ["accumulated", "local"]
        assert ws.has_tensors and ws.profile is not None and set(ws.profile.phases) == {"context", "generation"}
        assert all(r.passed for r in ws.reports.values())  # fp32 engine against fp32 HF
        assert "layers.1.mlp" in ws.all_names and "layers.1.mlp" not in ws.names
        await pilot.press("2")
        assert "context phase" in plain(screen, "#timeline-body")
        screen.target.profile = False  # the rerun skips timing, to keep the test short
        await pilot.press("1", "k")
        assert isinstance(app.screen, MarkScreen)
        app.screen.query_one(Input).value = "1.mlp"
        await pilot.pause()
        assert "1 not marked yet: layers.1.mlp" in plain(app.screen, "#mark-hint")
        await pilot.press("enter")
        await replaced(pilot, screen, ws)
        assert screen.ws.names == ["layers.0", "layers.1.mlp", "logits"]
        assert screen.ws.report("local", 1).row("layers.1.mlp").passed


async def test_enter_offers_to_mark_and_the_ui_answers_keys_while_a_rerun_works(tiny_engine_dir, monkeypatch):
    gate = threading.Event()
    real = jobs.rerun

    def slow_rerun(*args, **kwargs):
        kwargs["progress"]("waiting for the test", 0, 2)
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr("workbench.tui.screens.main.rerun", slow_rerun)
    app = engine_app(tiny_engine_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        old = screen.ws
        tree = screen.query_one(LayerTree)  # enter on a name that is not marked offers to mark it
        tree.focus()
        tree.select_name("layers.1.attn")
        await pilot.press("enter")
        assert isinstance(app.screen, MarkScreen) and app.screen.query_one(Input).value == "layers.1.attn"
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("r")
        status = screen.query_one(RunStatus)
        await wait_for(pilot, lambda: "waiting for the test" in plain(status, "#run-stage"))
        assert status.has_class("running") and screen.busy
        await pilot.press("n", "2")  # the screen keeps working meanwhile
        assert screen.selected == "logits" and screen.query_one(TabbedContent).active == "timeline"
        await pilot.press("r")  # a second run is refused, not queued
        assert sum(w.is_running for w in screen.workers) == 1
        gate.set()
        await replaced(pilot, screen, old)
        assert not status.has_class("running") and screen.selected == "logits"


async def test_r_reruns_a_session_with_its_model(session_file):
    app = WorkbenchApp(Target(session=session_file, profile=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        old = screen.ws
        assert not old.reports[("accumulated", 0)].passed  # the synthetic fault
        await pilot.press("r")
        await replaced(pilot, screen, old, timeout=120)
        ws = screen.ws
        assert ws.label == "synthetic.wbs" and ws.engine is not None and ws.session_path == session_file
        assert ws.steps == old.steps and ws.modes == old.modes and ws.names == old.names
        assert all(r.passed for r in ws.reports.values())  # the real tiny model has no fault


async def test_a_failed_load_says_why(tmp_path):
    app = WorkbenchApp(Target(session=tmp_path / "missing.wbs"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen_stack and "failed" in main_screen(app).sub_title)
        assert "no such session file" in plain(main_screen(app), "#detail-body")
        await pilot.press("n")  # nothing to move through: a warning, no crash
        assert main_screen(app).ws is None


def test_cli_checks_the_target_before_opening_the_screen(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["tui", "--help"])
    assert res.exit_code == 0 and "session file (.wbs" in res.output
    res = runner.invoke(main, ["tui", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such engine directory" in res.output
    bad = tmp_path / "bad.wbs"
    bad.write_text("{")
    res = runner.invoke(main, ["tui", str(bad)])
    assert res.exit_code == 2 and "not a session file" in res.output
