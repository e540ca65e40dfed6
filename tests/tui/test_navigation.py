"""Where the navigation keys go, without a screen; and what a workspace derives from a session."""

from __future__ import annotations

from tests.tui.synthetic import FAULT, NAMES, TOKEN_STEP
from workbench.tui.navigation import first_divergence, layer_jump, neighbour, next_failure
from workbench.tui.workspace import open_session


def test_neighbour_clamps_at_the_ends_and_starts_from_an_unknown_name():
    assert neighbour(NAMES, "embed", -1) == "embed"
    assert neighbour(NAMES, "logits", 1) == "logits"
    assert neighbour(NAMES, "layers.0.attn", 1) == "layers.0.post_norm"
    assert neighbour(NAMES, "not.a.name", 1) == "embed" and neighbour(NAMES, None, -1) == "logits"
    assert neighbour([], "embed", 1) is None
    diffed = ["layers.0", "layers.1.mlp", "logits"]  # from a name not diffed, the nearest diffed one
    assert neighbour(diffed, "layers.1.attn", 1, NAMES) == "layers.1.mlp"
    assert neighbour(diffed, "layers.1.attn", -1, NAMES) == "layers.0"
    assert neighbour(diffed, "embed", -1, NAMES) == "layers.0"


def test_layer_jump_goes_group_by_group():
    assert layer_jump(NAMES, "embed", 1) == "layers.0.input_norm"
    assert layer_jump(NAMES, "layers.0.mlp", 1) == "layers.1.input_norm"
    assert layer_jump(NAMES, "layers.1", 1) == "final_norm"
    assert layer_jump(NAMES, "final_norm", -1) == "layers.1.input_norm"
    assert layer_jump(NAMES, "embed", -1) is None
    assert layer_jump(["layers.0", "logits"], "layers.0", 1) == "logits"


def test_failures_and_divergence_come_from_the_reports(session_file):
    ws = open_session(session_file)
    report = ws.report("accumulated", 0)
    assert next_failure(report, "embed") == FAULT and next_failure(report, "logits") is None
    found = first_divergence(ws, "local", 1)
    assert (found.step, found.name) == (1, FAULT) and found.why.startswith("first failure")
    assert ws.modes == ["accumulated", "local"] and ws.steps == [0, 1, 2]
    assert ws.view("accumulated", 0, FAULT).worst[0].index[1] == 5
    assert [t.step for t in ws.tokens() if not t.matches] == [TOKEN_STEP]
    shares = ws.time_shares("context")
    assert abs(sum(v for k, v in shares.items() if not k.startswith("group:")) - 1.0) < 1e-9


def test_a_session_without_tensors_or_timings_says_what_it_lacks(bare_session_file):
    ws = open_session(bare_session_file)
    assert not ws.has_tensors and ws.view("accumulated", 0, FAULT) is None and ws.tokens() == []
    assert ws.profile is None and ws.time_shares("context") == {}
    assert any("no tensors" in n for n in ws.notes) and any("no timings" in n for n in ws.notes)
