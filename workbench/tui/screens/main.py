"""The main screen: the diff (tree, table, detail), timeline and tokens tabs over one workspace.

Reruns go to one backend (`self.backend`: the CLI's --backend, else what the first workspace ran
on); `b` switches it by rerunning on the next one. The header names the backend the shown numbers
came from, and the one reruns use where they differ.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from workbench.errors import WorkbenchError
from workbench.inspect.tensor_view import first_token_divergence
from workbench.runtime.backends import BACKEND_NAMES, resolve_device
from workbench.tui import keys
from workbench.tui.background import BackgroundRuns
from workbench.tui.format import backend_label, where
from workbench.tui.jobs import Target, rerun, save
from workbench.tui.navigation import first_divergence, layer_jump, neighbour, next_failure
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.mark import MarkScreen
from workbench.tui.screens.open import OpenScreen
from workbench.tui.screens.save import SaveScreen
from workbench.tui.screens.steps import StepScreen
from workbench.tui.widgets.detail import DetailPane, render_detail
from workbench.tui.widgets.diff_table import DiffTable
from workbench.tui.widgets.layer_tree import LayerTree
from workbench.tui.widgets.run_status import RunStatus
from workbench.tui.widgets.timeline import TimelineView
from workbench.tui.widgets.tokens import TokensView
from workbench.tui.workspace import Workspace, open_session


class MainScreen(BackgroundRuns, Screen):
    """Holds the workspace and the selection (mode, step, name); the widgets only draw what it hands them."""

    CSS_PATH = "../styles/main.tcss"
    BINDINGS = keys.bindings()
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target
        self.ws: Workspace | None = None
        self.mode, self.step, self.selected = "accumulated", 0, None
        self.backend = target.backend  # what reruns run on; None until the first workspace says

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="diff", id="tabs"):
            with TabPane("Diff", id="diff"):
                with Horizontal():
                    yield LayerTree(id="tree")
                    with Vertical(id="right"):
                        yield DiffTable(id="table")
                        yield DetailPane(id="detail")
            with TabPane("Timeline", id="timeline"):
                yield TimelineView(id="timeline-view")
            with TabPane("Tokens", id="tokens"):
                yield TokensView(id="tokens-view")
        yield RunStatus(id="run")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "wb tui"
        self.sub_title = self.target.describe()
        what = self.target.describe()
        self.query_one(DetailPane).show(Text(f"{what[0].upper()}{what[1:]}: the diff, the timeline and the "
                                             "tokens appear here when the run finishes (the bar below shows how "
                                             "far it got). Press ? for the keys."))
        self.start(self.target.describe(), self.target.load)

    # -- state ----------------------------------------------------------------------------------

    def apply(self, ws: Workspace) -> None:
        """Show a new workspace, keeping the mode, step and name where they still exist."""
        self.ws = ws
        self.backend = self.backend or ws.backend
        if self.mode not in ws.modes:
            self.mode = ws.modes[0]
        if ws.report(self.mode, self.step) is None:
            self.step = min(s for m, s in ws.reports if m == self.mode)
        self.query_one(LayerTree).populate(ws.all_names)
        report = ws.report(self.mode, self.step)
        if self.selected not in ws.all_names:
            self.selected = next((r.name for r in report.rows if not r.passed), report.rows[0].name if report.rows
                                 else ws.all_names[0])
        self.query_one(TokensView).show(ws.prompt_ids, ws.tokens(), ws.decode)
        self.redraw()
        self.query_one(LayerTree).select_name(self.selected)
        for note in ws.notes:
            self.notify(note, timeout=6)

    def redraw(self) -> None:
        """Redraw every pane for the current mode and step."""
        ws = self.ws
        report = ws.report(self.mode, self.step)
        shares = ws.time_shares(ws.phase_of(self.step))
        div = ws.divergence(self.mode, self.step)
        self.query_one(LayerTree).show({r.name: r for r in report.rows}, shares, div)
        self.query_one(DiffTable).show(report, shares, div, self.selected)
        n_pass = sum(r.passed for r in report.rows)
        self.sub_title = (f"{ws.label} · {self.backend_text()} · {self.mode} · {where(self.step)} · "
                          f"{n_pass}/{len(report.rows)} pass")
        self.show_selected()

    def backend_text(self) -> str:
        """The backend the shown numbers came from, and the one reruns use where it is another."""
        shown = backend_label(self.ws.backend, self.ws.device)
        return shown if self.backend == self.ws.backend else f"{shown} (reruns: {self.backend})"

    def show_selected(self) -> None:
        ws, name = self.ws, self.selected
        report = ws.report(self.mode, self.step)
        row = next((r for r in report.rows if r.name == name), None)
        note = "" if row is not None or name not in ws.names else f"{name} is not in the {self.mode} report"
        self.query_one(DetailPane).show(render_detail(name, row, ws.view(self.mode, self.step, name), note))
        self.query_one(TimelineView).show(ws.profile, name)  # redrawn only when the selected layer changes

    def select(self, name: str | None) -> None:
        """Make `name` the selected name in every pane."""
        if self.ws is None or name is None or name == self.selected:
            return
        self.selected = name
        self.query_one(LayerTree).select_name(name)
        self.query_one(DiffTable).select_name(name)
        self.show_selected()

    def go_to(self, name: str) -> None:
        """Show a name in the diff tab (the command palette's "Go to NAME")."""
        self.action_show_tab("diff")
        self.select(name)

    def on_layer_tree_name_highlighted(self, message: LayerTree.NameHighlighted) -> None:
        self.select(message.chosen)

    def on_diff_table_name_highlighted(self, message: DiffTable.NameHighlighted) -> None:
        self.select(message.chosen)

    def on_layer_tree_mark_requested(self, message: LayerTree.MarkRequested) -> None:
        self.action_mark(message.chosen)

    # -- actions (keys.ACTIONS) -----------------------------------------------------------------

    def _ready(self) -> bool:
        if self.ws is None:
            self.notify("Still loading; wait for the run to finish.", severity="warning")
        return self.ws is not None

    def _names(self) -> list[str]:
        return self.ws.report(self.mode, self.step).names

    def action_next_name(self) -> None:
        if self._ready():
            self.select(neighbour(self._names(), self.selected, 1, self.ws.all_names))

    def action_prev_name(self) -> None:
        if self._ready():
            self.select(neighbour(self._names(), self.selected, -1, self.ws.all_names))

    def action_next_layer(self) -> None:
        if self._ready():
            self.select(layer_jump(self._names(), self.selected, 1))

    def action_prev_layer(self) -> None:
        if self._ready():
            self.select(layer_jump(self._names(), self.selected, -1))

    def action_first_divergence(self) -> None:
        if not self._ready():
            return
        found = first_divergence(self.ws, self.mode, self.step)
        token = first_token_divergence(self.ws.tokens())
        tokens = f"; the tokens first differ at step {token.step} (tokens tab)" if token else ""
        if found is None:
            self.notify(f"No divergence in {self.mode} mode: every name passes at every step, no error jump"
                        f"{tokens}.")
            return
        self.set_step(found.step)
        self.select(found.name)
        self.notify(f"{found.name} at {where(found.step)}: {found.why}{tokens}", title="first divergence")

    def action_next_failure(self) -> None:
        if self._ready():
            name = next_failure(self.ws.report(self.mode, self.step), self.selected)
            if name is None:
                self.notify(f"No failing name after {self.selected} at {where(self.step)}.")
            self.select(name)

    def action_toggle_mode(self) -> None:
        if not self._ready():
            return
        others = [m for m in self.ws.modes if m != self.mode and self.ws.report(m, self.step) is not None]
        if not others:
            self.notify(f"Only {self.mode} mode was run.", severity="warning")
            return
        self.mode = others[0]
        self.redraw()

    def set_step(self, step: int | None) -> None:
        if step is None or self.ws is None or self.ws.report(self.mode, step) is None or step == self.step:
            return
        self.step = step
        self.redraw()

    def action_next_step(self) -> None:
        if self._ready():
            steps = self.ws.steps
            self.set_step(steps[min(steps.index(self.step) + 1, len(steps) - 1)])

    def action_prev_step(self) -> None:
        if self._ready():
            steps = self.ws.steps
            self.set_step(steps[max(steps.index(self.step) - 1, 0)])

    def action_choose_step(self) -> None:
        if self._ready():
            reports = [self.ws.report(self.mode, s) for s in self.ws.steps]
            self.app.push_screen(StepScreen(reports, self.step), self.set_step)

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
            self.query_one(LayerTree).focus()
        else:
            self.action_show_tab("diff")
            detail = self.query_one(DetailPane)
            self.maximize(detail, container=False)
            detail.focus()  # so the arrow keys scroll it

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_mark(self, name: str | None = None) -> None:
        if self._ready():
            unmarked = [n for n in self.ws.all_names if n not in self.ws.names]
            self.app.push_screen(MarkScreen(self.ws.all_names, unmarked, name or ""), self._marked)

    def _marked(self, patterns: list[str] | None) -> None:
        if patterns:
            self._rerun(patterns, self.backend)

    def action_rerun(self) -> None:
        if self._ready():
            self._rerun(None, self.backend)

    def action_switch_backend(self) -> None:
        if self._ready():
            following = BACKEND_NAMES[(BACKEND_NAMES.index(self.backend) + 1) % len(BACKEND_NAMES)]
            if self._rerun(None, following):
                self.backend = following
                self.redraw()  # the header says where reruns go now

    def _rerun(self, patterns: list[str] | None, backend: str) -> bool:
        """Rerun the workspace on `backend`, where it can run here (else say why, in one line); True if started."""
        try:
            device = resolve_device(backend, self.target.device)
        except WorkbenchError as e:
            self.notify(f"{e} (b switches the backend)", title=f"cannot run the {backend} backend",
                        severity="error", timeout=10)
            return False
        return self.start(f"rebuilding and rerunning on the {backend_label(backend, device)}", rerun, self.ws,
                          patterns, with_profile=self.target.profile, backend=backend, device=device)

    def action_save(self) -> None:
        if self._ready():
            default = self.ws.session_path or Path(f"{Path(self.ws.label.split(' ')[0]).stem}.wbs")
            self.app.push_screen(SaveScreen(str(default)), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if path:
            self.start(f"saving {path}", lambda progress: save(self.ws, path))

    def action_open(self) -> None:
        folder = self.ws.session_path.parent if self.ws is not None and self.ws.session_path else None
        self.app.push_screen(OpenScreen(folder), self._open)

    def _open(self, path: str | None) -> None:
        if path:
            self.start(f"opening {Path(path).name}", lambda progress: open_session(path))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())
