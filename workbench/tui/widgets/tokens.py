"""The tokens tab: HF's greedy text and the engine's choices side by side, the first divergent token marked."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.inspect.tensor_view import TokenStep, first_token_divergence
from workbench.tui.format import DIM_STYLE, FAIL_STYLE, PASS_STYLE

DIVERGED = "bold white on red"


def token_text(decode: Callable[[list[int]], str] | None, token: int) -> str:
    """A token as text (newlines and tabs made visible), or `#id` without a tokenizer."""
    if decode is None:
        return f"#{token}"
    return decode([token]).replace("\n", "⏎").replace("\t", "⇥") or f"#{token}"


def _cell(decode, token: int) -> str:
    """A token for a table cell: quoted text (whitespace shows), or `#id`."""
    return repr(token_text(decode, token)) if decode is not None else token_text(decode, token)


def _side(title: str, prompt: Text, tokens: list[int], decode, first: int | None, steps: list[int]) -> Panel:
    text = prompt.copy()
    for step, tok in zip(steps, tokens):
        style = DIVERGED if step == first else (FAIL_STYLE if first is not None and step > first else "bold")
        text.append(token_text(decode, tok), style=style)
        if decode is None:
            text.append(" ")
    return Panel(text, title=title, title_align="left", border_style="dim")


def render_tokens(prompt_ids: list[int], steps: list[TokenStep], decode) -> RenderableType:
    """Both sides' text and a table of per-step tokens and logprobs."""
    if decode is not None:
        prompt = Text(decode(prompt_ids), style=DIM_STYLE)
    else:
        prompt = Text("".join(f"#{t} " for t in prompt_ids), style=DIM_STYLE)
    if not steps:
        return Group(Panel(prompt, title="prompt", title_align="left", border_style="dim"),
                     Text("No logits tensors in this session, so no tokens to compare. Press r to rerun "
                          "(the run captures the logits).", style=DIM_STYLE))
    first = first_token_divergence(steps)
    first_step = first.step if first else None
    nums = [s.step for s in steps]
    sides = Table.grid(expand=True, padding=(0, 1))
    sides.add_column(ratio=1)
    sides.add_column(ratio=1)
    sides.add_row(_side("HF (greedy)", prompt, [s.hf_token for s in steps], decode, first_step, nums),
                  _side("engine (top-1, given HF's prefix)", prompt, [s.engine_token for s in steps], decode,
                        first_step, nums))
    if first is None:
        summary = Text(f"The engine's top-1 token matches HF's at all {len(steps)} steps.", style=PASS_STYLE)
    else:
        summary = Text(f"Tokens diverge at step {first.step}: HF chose {_cell(decode, first.hf_token)} "
                       f"(logprob {first.hf_logprob:.4f}; HF gives the engine's token "
                       f"{first.hf_logprob_of_engine:.4f}), the engine {_cell(decode, first.engine_token)} "
                       f"(logprob {first.engine_logprob:.4f}; it gives HF's token {first.engine_logprob_of_hf:.4f}).",
                       style=FAIL_STYLE)
    t = Table(box=None, padding=(0, 1), header_style="bold dim", show_edge=False)
    t.add_column("step", justify="right", no_wrap=True)
    t.add_column("HF token", max_width=16, no_wrap=True, overflow="ellipsis")
    t.add_column("logp", justify="right", no_wrap=True)
    t.add_column("engine token", max_width=16, no_wrap=True, overflow="ellipsis")
    t.add_column("logp", justify="right", no_wrap=True)
    t.add_column("eng logp(HF)", justify="right", no_wrap=True)  # how far the engine is from HF's choice
    t.add_column("", no_wrap=True)
    for s in steps:
        style = DIVERGED if s.step == first_step else None
        t.add_row(str(s.step), _cell(decode, s.hf_token), f"{s.hf_logprob:.4f}", _cell(decode, s.engine_token),
                  f"{s.engine_logprob:.4f}", f"{s.engine_logprob_of_hf:.4f}",
                  Text("✓", style=PASS_STYLE) if s.matches else Text("✗"), style=style)
    return Group(sides, summary, Text(""), t)


class TokensView(VerticalScroll):
    """The tokens tab's scrolling body."""

    def compose(self):
        yield Static(id="tokens-body")

    def show(self, prompt_ids: list[int], steps: list[TokenStep], decode) -> None:
        self.query_one("#tokens-body", Static).update(render_tokens(prompt_ids, steps, decode))
