"""The timeline tab: per-layer time bars of the context and generation phases, the selected layer opened up."""

from __future__ import annotations

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.inspect.profiler import PhaseProfile, ProfileReport
from workbench.inspect.timeline import summarize_profile
from workbench.names import layer_index
from workbench.tui.format import DIM_STYLE, backend_label, bar, pct

BAR_WIDTH = 20


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def render_phase(ph: PhaseProfile, selected_layer: str | None) -> RenderableType:
    """One phase: a header line, a bar per layer, and the own time of each name of the selected layer."""
    title = (f"{ph.phase} phase: {ph.num_tokens} token{'s' * (ph.num_tokens != 1)} a step\n"
             f"{_ms(ph.step_time.median_ms)} ms/step · {ph.tokens_per_s:,.0f} tokens/s · "
             f"{pct(ph.coverage)} attributed")
    if ph.graph_step_time is not None:  # the cuda backend's decode step as its CUDA graph replays it
        title += f"\n{_ms(ph.graph_step_time.median_ms)} ms/step as the decode graph replays"
    t = Table(title=title, title_justify="left", title_style="bold", box=None, padding=(0, 1), show_edge=False,
              header_style="bold dim")
    t.add_column("layer", no_wrap=True)
    t.add_column("", no_wrap=True)
    t.add_column("ms", justify="right", no_wrap=True)
    t.add_column("share", justify="right", no_wrap=True)
    if ph.baseline is not None:
        t.add_column("HF ms", justify="right", no_wrap=True)
    longest = max((r.time.median_ms for r in ph.layers.values()), default=0.0) or 1.0
    for name, row in ph.layers.items():
        is_sel = name == selected_layer
        cells = [Text(("▶ " if is_sel else "  ") + name, style="bold" if is_sel else None),
                 Text(bar(row.time.median_ms / longest, BAR_WIDTH), style="magenta" if is_sel else "cyan"),
                 _ms(row.time.median_ms), pct(row.share)]
        if ph.baseline is not None:
            hf = ph.baseline.names.get(name)
            cells.append(_ms(hf.time.median_ms) if hf else "")
        t.add_row(*cells)
        if is_sel:
            for sub, nrow in ph.names.items():
                if sub != name and layer_index(sub) is not None and _group(sub) == name:
                    cells = [Text(f"    {sub[len(name) + 1:]}", style=DIM_STYLE),
                             Text(bar(nrow.own.median_ms / longest, BAR_WIDTH), style="magenta"),
                             _ms(nrow.own.median_ms), ""]
                    t.add_row(*cells + ([""] if ph.baseline is not None else []))
    kinds = " · ".join(f"{k} {pct(r.share)}" for k, r in sorted(ph.kinds.items(), key=lambda kv: -kv[1].share)
                       if r.time.median_ms > 0)
    t.caption, t.caption_justify, t.caption_style = f"by kind: {kinds}", "left", DIM_STYLE
    return t


def _group(name: str) -> str:
    i = layer_index(name)
    return f"layers.{i}" if i is not None else name


def render_timeline(report: ProfileReport | None, selected: str | None) -> RenderableType:
    """Both phases side by side when they fit, with where they were measured."""
    if report is None:
        return Text("No timings: this session recorded no profile. Press r to rerun with the model "
                    "(it profiles the engine too).", style=DIM_STYLE)
    layer = _group(selected) if selected else None
    threads = f"{report.threads} thread{'s' * (report.threads != 1)}"
    head = Text(f"{backend_label(report.backend)}, {report.device_name or report.device}, {report.dtype}, {threads}, "
                f"medians of {report.config.repeats} repeats; the selected layer ({layer or 'none'}) is opened up: "
                "own time of each name", style=DIM_STYLE)
    fused = summarize_profile(report).fused
    if fused:  # the cuda backend times a fused statement once, under its first canonical name
        head.append("\nfused: " + ", ".join(f"{name} in {row}" for name, row in fused.items()))
    phases = [render_phase(ph, layer) for ph in report.phases.values()]
    return Group(head, Text(""), Columns(phases, padding=(1, 3)))


class TimelineView(VerticalScroll):
    """The timeline tab's scrolling body."""

    def compose(self):
        yield Static(id="timeline-body")

    _shown: tuple | None = None

    def show(self, report: ProfileReport | None, selected: str | None) -> None:
        key = (report, _group(selected) if selected else None)
        if self._shown is None or key[0] is not self._shown[0] or key[1] != self._shown[1]:
            self._shown = key
            self.query_one("#timeline-body", Static).update(render_timeline(report, selected))
