"""Every action of the main screen, once: its key, its title and what it does.

The bindings, the help screen and the command palette are all made from this table, so
they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Action:
    key: str  # Textual key name
    shown: str  # how the key is written for people
    action: str  # the screen's action (without "action_")
    title: str
    help: str
    group: str
    footer: str = ""  # the short label in the footer; empty: not in the footer


ACTIONS = [
    Action("n", "n", "next_name", "Next name", "Select the next name in layer order", "Navigate", "next"),
    Action("p", "p", "prev_name", "Previous name", "Select the previous name in layer order", "Navigate", "prev"),
    Action("N", "N", "next_layer", "Next layer", "Jump to the first name of the next layer", "Navigate"),
    Action("P", "P", "prev_layer", "Previous layer", "Jump to the first name of the previous layer", "Navigate"),
    Action("f", "f", "first_divergence", "First divergence",
           "Jump to the first failing name (else the first error jump), searching later steps too", "Navigate",
           "first div"),
    Action("e", "e", "next_failure", "Next failure", "Jump to the next failing name after the selected one",
           "Navigate"),
    Action("m", "m", "toggle_mode", "Switch mode",
           "Switch between accumulated (end to end) and local (each node fed HF's inputs)", "View", "mode"),
    Action("right_square_bracket", "]", "next_step", "Next step", "Show the next generation step", "View"),
    Action("left_square_bracket", "[", "prev_step", "Previous step", "Show the previous step (0 = context phase)",
           "View"),
    Action("s", "s", "choose_step", "Choose step", "Pick the step to show: the context phase or a generation step",
           "View", "step"),
    Action("z", "z", "zoom", "Zoom the detail pane", "Give the detail pane the whole screen, or give it back",
           "View"),
    Action("1", "1", "show_tab('diff')", "Diff tab", "Layer tree, diff table and detail pane", "View"),
    Action("2", "2", "show_tab('timeline')", "Timeline tab", "Per-layer time bars, context and generation phases",
           "View"),
    Action("3", "3", "show_tab('tokens')", "Tokens tab", "Engine and HF tokens side by side, with logprobs", "View"),
    Action("k", "k", "mark", "Mark names and rerun",
           "Mark more names as engine outputs, rebuild the debug engine and rerun", "Run", "mark"),
    Action("r", "r", "rerun", "Rebuild and rerun", "Rebuild the engine and rerun the diff and the profile", "Run"),
    Action("b", "b", "switch_backend", "Switch backend",
           "Rerun on the other backend (torch: the reference; cuda: the fast path) and keep it for later runs", "Run"),
    Action("w", "w", "save", "Save session", "Save the current state as a session file (.wbs) with tensors",
           "Files", "save"),
    Action("o", "o", "open", "Open session", "Open a saved session file (.wbs)", "Files"),
    Action("question_mark", "?", "help", "Help", "List the keys", "App", "help"),
]


def bindings() -> list[Binding]:
    """The main screen's bindings."""
    return [Binding(a.key, a.action, a.footer or a.title, show=bool(a.footer), key_display=a.shown) for a in ACTIONS]
