"""Screenshots of the main screens over the synthetic session (fixed numbers, fixed timings, fixed sizes).

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the report (snapshot_report.html) before committing the new SVGs.
"""

from __future__ import annotations

from tests.tui.helpers import settle
from workbench.tui.app import WorkbenchApp
from workbench.tui.jobs import Target

WIDE, NARROW = (120, 40), (80, 24)


def app(path) -> WorkbenchApp:
    return WorkbenchApp(Target(session=path))


def test_diff_tab_wide(snap_compare, session_file):
    assert snap_compare(app(session_file), terminal_size=WIDE, run_before=settle)


def test_diff_tab_narrow(snap_compare, session_file):
    assert snap_compare(app(session_file), terminal_size=NARROW, run_before=settle)


def test_local_mode_at_a_generation_step(snap_compare, session_file):
    assert snap_compare(app(session_file), press=["m", "right_square_bracket", "P"], terminal_size=WIDE,
                        run_before=settle)


def test_timeline_tab(snap_compare, session_file):
    assert snap_compare(app(session_file), press=["2"], terminal_size=WIDE, run_before=settle)


def test_tokens_tab(snap_compare, session_file):
    assert snap_compare(app(session_file), press=["3"], terminal_size=WIDE, run_before=settle)


def test_help_screen(snap_compare, session_file):
    assert snap_compare(app(session_file), press=["question_mark"], terminal_size=WIDE, run_before=settle)


def test_session_without_tensors_shows_metrics_only(snap_compare, bare_session_file):
    assert snap_compare(app(bare_session_file), terminal_size=WIDE, run_before=settle)
