"""cuda_program's `layer_block` fusion: finding a layer block in the graph and emitting its one call.

A layer block is o_proj -> add -> norm -> gate_up (+ activation) -> down -> add -> norm -> the next projection (the
next layer's qkv, or the logits layer). Where runtime.layer_block enables its shapes, one `_layer_block(...)` call at
o_proj computes o, the two sums, the activation, down and the next projection; the norms and gate_up become plain
nodes again, computed only where something else reads them (a debug engine's marks). `c` is the program compiler
(cuda_program._Compiler): its graph, its consumers and the fusions it has chosen.
"""

from __future__ import annotations

from workbench.builder.network import Node


def _through(c, name: str) -> str:
    """name, or the identity node that is its only reader (and so on)."""
    while len(c.consumers[name]) == 1 and c.nodes[c.consumers[name][0]].op == "identity":
        name = c.consumers[name][0]
    return name


def _through_to(c, add: str, start: str) -> str:
    """The input of `add` that `start` reaches through identity nodes."""
    name = start
    while name not in c.nodes[add].inputs:
        name = c.consumers[name][0]
    return name


def _reader(c, name: str, op: str, first: bool = True) -> Node | None:
    """The one reader of `name` with this op (as its first input if `first`), or None."""
    found = [c.nodes[r] for r in c.consumers[name]
             if c.nodes[r].op == op and (not first or c.nodes[r].inputs[0] == name)]
    return found[0] if len(found) == 1 else None


def _weights_format(c, node: Node | None, fmt: str | None) -> str | None:
    """The weight format of a projection the block kernel could take ("bf16"/"float" or "w8a16"; `fmt` if given), or
    None."""
    if node is None or not c._projection(node.name):
        return None
    if node.op == "linear":
        got = "bf16" if node.dtype == "bfloat16" else "float"
        return got if len(node.inputs) == 2 and fmt in (None, got) else None
    ok = node.attrs["method"] == "w8a16" and list(node.attrs["operands"]) == ["qweight", "scales"]
    return "w8a16" if ok and fmt in (None, "w8a16") else None


def match(c, o_proj: Node) -> None:
    """Claim the layer block that starts at o_proj, where its shapes are enabled (after the other fusions matched:
    those of its nodes are undone)."""
    from workbench.runtime import layer_block

    fmt = _weights_format(c, o_proj, None)
    add1 = _reader(c, _through(c, o_proj.name), "add", first=False)
    if fmt is None or add1 is None or len(add1.inputs) != 2 or o_proj.name in c.absorbed:
        return
    n1 = _reader(c, add1.name, "rms_norm")
    gu = _reader(c, n1.name, o_proj.op) if n1 is not None else None
    mul = next((n for n, (kind, info) in c.emit_at.items() if kind == "swiglu_linear" and gu is not None
                and info[0] == gu.name), None)
    down = _reader(c, mul, o_proj.op) if mul is not None else None
    add2 = _reader(c, _through(c, down.name), "add", first=False) if down is not None else None
    n2 = _reader(c, add2.name, "rms_norm") if add2 is not None and add1.name in add2.inputs else None
    nxt = _reader(c, n2.name, o_proj.op) if n2 is not None else None
    if nxt is None or any(_weights_format(c, p, fmt) is None for p in (gu, down, nxt)):
        return
    if any(c.nodes[n.inputs[1]].op != "param" for n in (n1, n2)):
        return
    if not layer_block.enabled(o_proj.shape[-1], gu.shape[-1] // 2, nxt.shape[-1], fmt):
        return
    # undo the fusions these nodes were given: the norms and gate_up become plain nodes, dropped unless read
    for add, norm in ((add1, n1), (add2, n2)):
        c.emit_at.pop(add.name, None)
        c.absorbed.discard(norm.name)
        c.fusions.pop(norm.name, None)
    for proj in (gu.name, nxt.name):
        c.norm_into.pop(proj, None)
        c.norm_at.pop(proj, None)
    c.emit_at.pop(mul, None)
    act = c.nodes[mul].inputs[0]
    c.absorbed.discard(act)
    c.fusions.pop(act, None)
    site = sum(1 for kind, _ in c.emit_at.values() if kind == "layer_block")
    c.emit_at[o_proj.name] = ("layer_block", (site, add1.name, n1.name, gu.name, mul, down.name, add2.name, n2.name,
                                              nxt.name))
    for name in (add1.name, mul, down.name, add2.name, nxt.name):
        c.absorbed.add(name)
    for name in (o_proj.name, add1.name, mul, down.name, add2.name, nxt.name):
        c.fusions[name] = "layer_block"


def emit(c, o_proj: Node, info: tuple, var: dict[str, str], taken: set[str]):
    """`o, h1, act, d, h2, y = _layer_block(site, x, residual, ...)`: the block's values, under the names of the
    nodes that hold them (the adds, the activation, down, the next projection)."""
    from workbench.runtime.cuda_program import _ident, _Stmt

    site, add1, n1, gu, mul, down, add2, n2, nxt = info
    for name in (add1, mul, down, add2, nxt):
        var[name] = _ident(name, taken)
    res = next(i for i in c.nodes[add1].inputs if i != _through_to(c, add1, o_proj.name))
    x = var[o_proj.inputs[0]]

    def spec(name: str) -> str:
        p = c.nodes[name]
        if p.op == "linear":
            return f"({var[p.inputs[1]]}, None)"
        return f"(N[{name!r}], [{', '.join(var[i] for i in p.inputs[1:])}])"

    norm1, norm2 = c.nodes[n1], c.nodes[n2]
    outs = ", ".join(var[n] for n in (o_proj.name, add1, mul, down, add2, nxt))
    code = (f"{outs} = _layer_block({site}, {x}, {var[res]}, {var[norm1.inputs[1]]}, {norm1.attrs['eps']!r}, "
            f"{spec(o_proj.name)}, {spec(gu)}, {spec(down)}, {var[norm2.inputs[1]]}, {norm2.attrs['eps']!r}, "
            f"{spec(nxt)})")
    return _Stmt(code, (var[o_proj.name], var[add1], var[mul], var[down], var[add2], var[nxt]), (x, var[res]),
                 pure=False)


def reads_attention(c, attn: str) -> bool:
    """Whether a layer block's o_proj reads this attention (through reshapes): the attention then merges its
    partitions in its own last programs (measured faster before the block, slower before a GEMV)."""
    name = attn
    while len(c.consumers[name]) == 1 and c.nodes[c.consumers[name][0]].op in ("reshape", "identity"):
        name = c.consumers[name][0]
    return any(c.emit_at.get(r, ("",))[0] == "layer_block" for r in c.consumers[name])
