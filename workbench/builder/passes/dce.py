"""Dead-code elimination: drop nodes (and their weights) that no output depends on."""

from __future__ import annotations

from workbench.builder.network import Network


def eliminate_dead_code(net: Network) -> Network:
    """A copy of `net` without the nodes that no output (nor declared input) reaches."""
    live: set[str] = set(net.inputs)
    stack = list(net.outputs)
    while stack:
        name = stack.pop()
        if name in live and name not in net.inputs:
            continue
        live.add(name)
        stack.extend(i for i in net.nodes[name].inputs if i not in live)
    out = net.copy()
    out.nodes = {k: v for k, v in out.nodes.items() if k in live}
    out.weights = {k: v for k, v in out.weights.items() if k in live}
    return out
