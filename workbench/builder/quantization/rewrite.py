"""Graph surgery shared by the quantization passes: pick the target linears, swap in `quant_linear`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench import names as names_mod
from workbench.builder.network import Network, Node, dtype_name
from workbench.errors import WorkbenchError


@dataclass
class QuantizedLinear:
    """What replaces one linear: the op attributes and the operand tensors, by role, in input order."""

    attrs: dict
    operands: dict[str, torch.Tensor]  # role -> tensor; "bias" reuses the linear's own bias param


def linear_names(net: Network) -> list[str]:
    """Every `linear` node, in graph order."""
    return [n.name for n in net.nodes.values() if n.op == "linear"]


def select_targets(net: Network, targets: list[str], exclude: list[str]) -> list[str]:
    """The linear nodes matched by `targets` and by no `exclude` pattern (a pattern may also name a module)."""
    linears = linear_names(net)
    chosen = names_mod.match(targets, linears, strict=False) if targets else []
    dropped: set[str] = set()
    for pattern in exclude:
        hits = _match_or_prefix(pattern, linears)
        if not hits:
            raise WorkbenchError(names_mod.unknown_name_message(pattern, linears).replace("it matches no name",
                                                                                          "it excludes no linear layer"))
        dropped |= hits
    return [n for n in chosen if n not in dropped]


def _match_or_prefix(pattern: str, names: list[str]) -> set[str]:
    hits = set(names_mod.match([pattern], names, strict=False))
    for p in names_mod._expand(pattern):  # `layers.1.mlp` excludes the linears inside that module
        hits |= {n for n in names if n.startswith(p + ".")}
    return hits


def weight_of(net: Network, name: str) -> torch.Tensor:
    """The [out, in] weight of linear node `name`."""
    return net.weights[net.nodes[name].inputs[1]]


def quant_linear_node(node: Node, q: QuantizedLinear) -> tuple[Node, dict[str, torch.Tensor]]:
    """The `quant_linear` node that replaces linear `node`, and its operand params named `<node>.<role>`."""
    if node.op != "linear":
        raise WorkbenchError(f"quantization: node {node.name!r} is a {node.op}, not a linear")
    inputs, roles, params = [node.inputs[0]], [], {}
    for role, value in q.operands.items():
        if role == "bias":
            continue
        pname = f"{node.name}.{role}"
        params[pname] = value.contiguous()
        inputs.append(pname)
        roles.append(role)
    if len(node.inputs) == 3:  # the linear's own bias param
        inputs.append(node.inputs[2])
        roles.append("bias")
    attrs = {**q.attrs, "operands": roles}
    return Node(node.name, "quant_linear", inputs, attrs, node.dtype, list(node.shape)), params


def replace_linears(net: Network, replacements: dict[str, QuantizedLinear]) -> Network:
    """A copy of `net` where each named linear becomes a `quant_linear` node of the same name.

    Operand params are named `<node>.<role>` and placed just before the node; the old weight
    param is dropped once nothing reads it.
    """
    out = net.copy()
    nodes: dict[str, Node] = {}
    for name, node in out.nodes.items():
        q = replacements.get(name)
        if q is None:
            nodes[name] = node
            continue
        qnode, params = quant_linear_node(node, q)
        for pname, value in params.items():
            if pname in out.nodes or pname in nodes:
                raise WorkbenchError(f"quantization: node {pname!r} already exists")
            nodes[pname] = Node(pname, "param", [], {}, dtype_name(value.dtype), list(value.shape))
            out.weights[pname] = value
        nodes[name] = qnode
    out.nodes = nodes
    used = {i for n in nodes.values() for i in n.inputs}
    for name in replacements:
        w = net.nodes[name].inputs[1]
        if w not in used and w in out.nodes:
            del out.nodes[w]
            del out.weights[w]
    return out


def restore_linears(net: Network, reference: Network, names: list[str]) -> Network:
    """A copy of quantized `net` with the named `quant_linear` nodes put back as `reference`'s linears."""
    out = net.copy()
    nodes: dict[str, Node] = {}
    wanted = set(names)
    for name, node in out.nodes.items():
        if name in wanted:
            ref = reference.nodes[name]
            for i in ref.inputs[1:]:
                if i not in nodes:
                    nodes[i] = Node(i, "param", [], {}, reference.nodes[i].dtype, list(reference.nodes[i].shape))
                    out.weights[i] = reference.weights[i]
            nodes[name] = Node(name, ref.op, list(ref.inputs), dict(ref.attrs), ref.dtype, list(ref.shape))
        else:
            nodes[name] = node
    out.nodes = nodes
    used = {i for n in nodes.values() for i in n.inputs}
    for name in wanted:
        for i in net.nodes[name].inputs[1:]:
            if i not in used and i in out.nodes:
                del out.nodes[i]
                del out.weights[i]
    return out
