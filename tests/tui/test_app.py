"""Pilot tests of every key and dialog of `wb tui`, over the synthetic session (no model needed)."""

from __future__ import annotations

import pytest
from textual.widgets import Input, OptionList, TabbedContent

from tests.tui.helpers import loaded, plain, replaced, wait_for
from tests.tui.synthetic import FAULT, FAULT_CHANNEL, NAMES, TOKEN_STEP
from workbench.inspect.session_file import load_session
from workbench.tui.app import WorkbenchApp
from workbench.tui.jobs import Target
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.steps import StepScreen
from workbench.tui.widgets.detail import DetailPane
from workbench.tui.widgets.diff_table import DiffTable
from workbench.tui.widgets.layer_tree import LayerTree

pytestmark = pytest.mark.anyio
SIZE = (80, 24)  # small screens render faster; the snapshots cover the large one


def detail_text(screen) -> str:
    return plain(screen, "#detail-body")


async def test_opening_a_session_selects_the_first_failure_and_fills_every_pane(session_app):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert screen.ws.label == "synthetic.wbs" and screen.ws.has_tensors
        assert screen.selected == FAULT and screen.mode == "accumulated" and screen.step == 0
        assert "13/17 pass" in screen.sub_title
        tree = screen.query_one(LayerTree)
        assert set(tree._leaves) == set(NAMES)
        assert screen.query_one(DiffTable).row_count == len(NAMES)
        text = detail_text(screen)
        assert "FAIL" in text and "worst coordinates" in text and "|error| histogram" in text
        assert f"at (4, {FAULT_CHANNEL})" in text  # the planted channel holds the worst error


async def test_n_p_step_through_names_and_shift_jumps_layers(session_app):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("n")
        assert screen.selected == "layers.1"
        await pilot.press("p", "p")
        assert screen.selected == "layers.1.post_norm"
        await pilot.press("P")
        assert screen.selected == "layers.0.input_norm"
        await pilot.press("P")
        assert screen.selected == "embed"
        await pilot.press("N", "N", "N")
        assert screen.selected == "final_norm"
        # the table follows the selection
        table = screen.query_one(DiffTable)
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "final_norm"


async def test_f_jumps_to_the_first_divergence_and_e_to_the_next_failure(session_app):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("P", "P")  # away from it
        await pilot.press("f")
        assert screen.selected == FAULT
        await pilot.press("e")
        assert screen.selected == "layers.1"
        await pilot.press("e", "e", "e")
        assert screen.selected == "logits"  # no failure after logits: it stays


async def test_m_switches_mode_and_the_table_shows_the_local_report(session_app):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("m")
        assert screen.mode == "local" and "local" in screen.sub_title and "16/17 pass" in screen.sub_title
        await pilot.press("m")
        assert screen.mode == "accumulated"


async def test_brackets_and_the_step_picker_choose_the_generation_step(session_app):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("right_square_bracket")
        assert screen.step == 1 and "generation step 1" in screen.sub_title
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.step == 2  # the last step stays
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert screen.step == 0
        await pilot.press("s")
        assert isinstance(pilot.app.screen, StepScreen)
        await pilot.press("down", "down", "enter")
        assert screen.step == 2 and pilot.app.screen is screen
        await pilot.press("s", "escape")
        assert screen.step == 2


async def test_tabs_timeline_tokens_zoom_and_help(session_app):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        tabs = screen.query_one(TabbedContent)
        for key, tab in (("2", "timeline"), ("3", "tokens"), ("1", "diff")):
            await pilot.press(key)
            assert tabs.active == tab
        timeline = plain(screen, "#timeline-body")
        assert "context phase" in timeline and "generation phase" in timeline and "▶ layers.1" in timeline
        assert "attn.core" in timeline  # a name of the selected layer, opened up
        tokens = plain(screen, "#tokens-body")
        assert f"Tokens diverge at step {TOKEN_STEP}" in tokens and "#40" in tokens
        await pilot.press("z")
        assert isinstance(screen.maximized, DetailPane)
        await pilot.press("z")
        assert screen.maximized is None
        await pilot.press("question_mark")
        assert isinstance(pilot.app.screen, HelpScreen)
        assert "First divergence" in plain(pilot.app.screen, "#help-keys")
        await pilot.press("escape")
        assert pilot.app.screen is screen


async def test_command_palette_runs_actions_and_goes_to_names(session_app):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        for query, done in (("go to layers.0.attn.core", lambda: screen.selected == "layers.0.attn.core"),
                            ("switch mode", lambda: screen.mode == "local")):
            await pilot.press("ctrl+p")
            pilot.app.screen.query_one(Input).value = query
            await wait_for(pilot, lambda: pilot.app.screen.query_one(OptionList).option_count > 0, 10)
            await pilot.press("enter")
            await wait_for(pilot, done, 10)


async def test_mark_dialog_refuses_bad_patterns_and_w_saves_a_session_that_opens_again(session_app, tmp_path):
    out = tmp_path / "saved.wbs"
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("k")  # the mark dialog checks patterns as they are typed (brackets are not markup)
        pilot.app.screen.query_one(Input).value = "[red]x"
        await pilot.pause()
        assert "unknown layer pattern" in plain(pilot.app.screen, "#mark-hint")
        await pilot.press("enter")  # refused: the dialog stays
        assert "unknown layer pattern" in plain(pilot.app.screen, "#mark-hint")
        await pilot.press("escape")
        assert pilot.app.screen is screen and not screen.busy
        await pilot.press("w")
        field = pilot.app.screen.query_one(Input)
        field.value = str(out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: out.is_file() and not screen.busy)
    saved = load_session(out)
    assert saved.tensors is not None and len(saved.reports) == 6 and saved.profile is not None
    async with WorkbenchApp(Target(session=out)).run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert screen.selected == FAULT and screen.ws.has_tensors


async def test_o_opens_a_session_without_tensors_and_says_so_after_a_wrong_path(session_app, bare_session_file):
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        old = screen.ws
        await pilot.press("o")
        dialog = pilot.app.screen
        dialog.query_one(Input).value = str(bare_session_file.with_name("nope.wbs"))
        await pilot.press("enter")
        assert pilot.app.screen is dialog and "no such file" in plain(dialog, "#open-hint")
        dialog.query_one(Input).value = str(bare_session_file)
        await pilot.press("enter")
        await replaced(pilot, screen, old)
        assert screen.ws.label == "bare.wbs" and not screen.ws.has_tensors
        assert "No tensors for this name" in detail_text(screen)
        assert screen.selected == FAULT  # kept across sessions of the same model
        await pilot.press("3")
        assert "No logits tensors" in plain(screen, "#tokens-body")
        await pilot.press("2")
        assert "No timings" in plain(screen, "#timeline-body")
