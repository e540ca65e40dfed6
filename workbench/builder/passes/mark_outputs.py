"""Mark intermediate tensors as extra network outputs, by name or pattern."""

from __future__ import annotations

from workbench.builder.network import Network


def mark_outputs(net: Network, patterns: list[str]) -> Network:
    """A copy of `net` whose outputs also include every node selected by `patterns`."""
    out = net.copy()
    if patterns:
        out.mark(list(patterns))
    return out
