"""The canonical names shared by the graph, the diff, the timeline and the TUI, and patterns over them."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable

from workbench.errors import PatternError

# Per decoder layer, in execution order; see DESIGN.md "The names everything shares".
LAYER_PARTS = ("input_norm", "attn.qkv", "attn.core", "attn", "post_norm", "mlp", "")


def canonical_names(num_layers: int) -> list[str]:
    """Every canonical name of a decoder-only model with `num_layers` layers, in execution order."""
    names = ["embed"]
    for i in range(num_layers):
        names += [f"layers.{i}.{part}" if part else f"layers.{i}" for part in LAYER_PARTS]
    return names + ["final_norm", "logits"]


def layer_index(name: str) -> int | None:
    """The decoder layer a name belongs to (`layers.12.attn` -> 12), or None."""
    m = re.match(r"layers\.(\d+)(\.|$)", name)
    return int(m.group(1)) if m else None


_RANGE = re.compile(r"(?<![\w*])(\d+)-(\d+)(?![\w])")


def _expand(pattern: str) -> list[str]:
    """Normalise one pattern: `12.attn` -> `layers.12.attn`, `layers.3-5` -> three patterns."""
    p = pattern.strip()
    if re.match(r"^\d", p):
        p = "layers." + p
    m = _RANGE.search(p)
    if not m:
        return [p]
    lo, hi = int(m.group(1)), int(m.group(2))
    if lo > hi:
        raise PatternError(f"layer pattern {pattern!r}: range {lo}-{hi} is empty")
    out = []
    for i in range(lo, hi + 1):
        out += _expand(p[: m.start()] + str(i) + p[m.end() :])
    return out


def match(patterns: str | Iterable[str], names: Iterable[str], *, strict: bool = True) -> list[str]:
    """The names (in their given order) selected by any of the patterns.

    A pattern is an exact name, a short name (`12.attn`), a glob (`*.mlp`, `layers.3.*`),
    a layer range (`layers.3-7`, `3-7.mlp`) or `all`. With `strict`, a pattern that selects
    nothing raises PatternError suggesting close names.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = [q for p in patterns for q in p.split(",") if q.strip()]
    names = list(names)
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern.strip() == "all":
            chosen.update(names)
            continue
        hits = set()
        for p in _expand(pattern):
            hits.update(fnmatch.filter(names, p) if any(c in p for c in "*?[") else [n for n in names if n == p])
        if strict and not hits:
            raise PatternError(unknown_name_message(pattern, names))
        chosen |= hits
    return [n for n in names if n in chosen]


def unknown_name_message(pattern: str, names: Iterable[str]) -> str:
    """A one-line error for a pattern that selects nothing, with close names."""
    names = list(names)
    guess = _expand(pattern)[0] if pattern.strip() else pattern
    close = difflib.get_close_matches(guess, names, n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; names look like {', '.join(names[:3])}, ..."
    return f"unknown layer pattern {pattern!r}: it matches no name{hint}"
