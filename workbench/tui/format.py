"""Small text helpers shared by the widgets: numbers, shares, bars, steps and backends."""

from __future__ import annotations

import math

from rich.text import Text

PASS_STYLE, FAIL_STYLE, JUMP_STYLE, DIM_STYLE = "green", "bold red", "yellow", "dim"
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def num(x: float) -> str:
    """Three significant digits; 0, inf and nan spelled plainly."""
    if x is None:
        return "-"
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return "0" if x == 0 else f"{x:.3g}"


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar `width` cells wide filled to `fraction`, in eighths of a cell."""
    fraction = 0.0 if not math.isfinite(fraction) else min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[rest] if rest else "")).ljust(width)


def verdict(passed: bool | None) -> Text:
    if passed is None:
        return Text("  -  ", style=DIM_STYLE)
    return Text("pass", style=PASS_STYLE) if passed else Text("FAIL", style=FAIL_STYLE)


def where(step: int) -> str:
    return "context phase" if step == 0 else f"generation step {step}"


def backend_label(backend: str, device: str | None = None) -> str:
    """`cuda backend`, naming the device where it is not the backend's usual one (`cuda backend on cpu`)."""
    usual = "cuda" if backend == "cuda" else "cpu"
    return f"{backend} backend" + ("" if (device or usual).split(":")[0] == usual else f" on {device}")
