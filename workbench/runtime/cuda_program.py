"""Compiles an engine's graph into one straight-line Python function of torch and Triton calls.

The graph interpreter pays a dict lookup, a closure call and bookkeeping per node; here each node
becomes one line of generated source (readable: `Program.source`), with three fusions:

- `add` -> `rms_norm` of its sum: one pass writing both the sum (the residual stream) and the norm;
  where the norm's only reader is a linear layer (plain, weight-only quantized, or the gate_up of the
  activation fusion below), the add and the norm move into that layer's call: a one-row GEMV computes
  the norm in its prologue and writes the sum (plugins/gemv.py, `norm=`), anything else runs the add
  + norm pass first;
- gate_up projection -> `slice` gate/up -> `silu(gate) * up`: computed from the projection's
  input by one call that, where the decode step's GEMV policy chooses it, is one GEMV writing the
  activation (gate_up never written, no activation kernel), else the projection then one
  activation pass (`silu_and_mul`, also used when the projection is something else);
- `o_proj` -> add + norm -> gate_up + activation -> `down` -> add + norm -> the next projection (a layer block):
  one `_layer_block` call where runtime.layer_block enables it for these shapes, which runs the persistent block
  kernel for a decode step of one row and the plugins' launches otherwise; the norms and gate_up are computed on
  the side only where something else reads them;
- `slice` q/k/v -> `rope(q)`, `rope(k)` -> `attention`: computed from the fused projection by one call:
  a prefill rotates q and k and stores k, v in the paged KV cache in one kernel, then runs flash
  attention; a decode step does all of it in the paged attention kernel. Rotated q and k are
  computed (on the side, without writing the cache) only where something else reads them.

Fusions are chosen from the graph's structure alone, never from which tensors are marked: a debug
engine runs the same kernels. A marked tensor that a fusion does not materialise (e.g. `mlp.gate_act`)
is computed on the side from the same inputs, so marking never changes what the engine outputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from workbench.builder.network import Network, Node
from workbench.runtime import layer_block_fusion

PURE_VIEWS = ("identity", "reshape", "slice")
# Where an add + norm goes (WB_NORM_FUSION): "prologue" into the call of the projection that reads the norm, whose
# GEMV computes it in its prologue where runtime.norm_linear says so (one row, float weights, a small grid); "off":
# the add + norm kernel. Measured on an H100 (bench/results/h100_notes.md, this session's calls 2-4): 1B bf16 at
# batch 1 922 -> 948 tok/s, 8B unchanged. An "epilogue" fusion (the last program of the GEMV whose output the add
# takes computes the sum and the norm, commit e8d0455) was slower everywhere and is gone.
NORM_FUSIONS = ("prologue", "off")
NORM_FUSION = os.environ.get("WB_NORM_FUSION", "prologue")


@dataclass
class _Stmt:
    code: str
    defines: tuple[str, ...]
    reads: tuple[str, ...]
    pure: bool = True  # no side effect: may be dropped when nothing reads what it defines


@dataclass
class Program:
    """The generated function `fn(ctx, W, input_ids, positions) -> {output: tensor}` and its source."""

    source: str
    fn: Callable
    fusions: dict[str, str]  # node name -> fusion that computes it
    rope_tables: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> (inv_freq param, scaling)


def _ident(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name)
    if not base or base[0].isdigit() or base in ("ctx", "W", "N"):
        base = "v_" + base
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def _last_dim(node: Node, rank: int) -> bool:
    return node.attrs.get("dim") in (-1, rank - 1)


def _slice_of(nodes: dict[str, Node], name: str, start: int, end: int) -> str | None:
    """The sliced tensor if `name` is slice(x, last dim, start, end), else None."""
    n = nodes.get(name)
    if n is None or n.op != "slice" or not _last_dim(n, len(n.shape)):
        return None
    if (n.attrs["start"], n.attrs["end"]) != (start, end):
        return None
    return n.inputs[0]


class _Compiler:
    def __init__(self, net: Network):
        self.net = net
        self.nodes = net.nodes
        self.consumers = net.consumers()
        self.outputs = set(net.outputs)
        self.fusions: dict[str, str] = {}
        self.emit_at: dict[str, tuple[str, tuple]] = {}  # node -> (fusion kind, details), emitted at its position
        self.absorbed: set[str] = set()  # computed by a fusion emitted elsewhere
        self.rope_tables: dict[str, tuple[str, float]] = {}
        self.norm_into: dict[str, str] = {}  # projection -> the add whose add + norm its call computes
        self.norm_at: dict[str, str] = {}  # projection -> the node where that call is emitted
        self.order = {name: i for i, name in enumerate(self.nodes)}  # node -> its position in the graph

    # -- pattern matching ---------------------------------------------------------------------------
    def match(self) -> None:
        for node in self.nodes.values():
            if node.op == "attention":
                self._match_rope_qkv(node)
        for node in self.nodes.values():
            if node.op == "rms_norm":
                self._match_add_norm(node)
            elif node.op == "mul":
                self._match_silu_mul(node)
        if NORM_FUSION not in NORM_FUSIONS:
            raise ValueError(f"WB_NORM_FUSION={NORM_FUSION!r}: choose one of {', '.join(NORM_FUSIONS)}")
        for node in self.nodes.values():
            if NORM_FUSION == "prologue" and self.emit_at.get(node.name, ("",))[0] == "add_rms_norm":
                self._match_norm_into_projection(node)
        for node in list(self.nodes.values()):
            if self._projection(node.name):
                layer_block_fusion.match(self, node)

    def _match_add_norm(self, norm: Node) -> None:
        add = self.nodes[norm.inputs[0]]
        if add.op != "add" or len(add.inputs) != 2 or add.name in self.emit_at:
            return
        a, b = (self.nodes[i] for i in add.inputs)
        if not (a.shape == b.shape == add.shape and a.dtype == b.dtype == add.dtype):
            return
        if self.nodes[norm.inputs[1]].op != "param" or self.nodes[norm.inputs[1]].dtype != add.dtype:
            return
        self.emit_at[add.name] = ("add_rms_norm", (norm.name,))
        self.absorbed.add(norm.name)
        self.fusions[add.name] = self.fusions[norm.name] = "add_rms_norm"

    def _match_norm_into_projection(self, add: Node) -> None:
        """add + norm computed by the call of the norm's only reader, a projection, if nothing reads the sum
        before that call (which sits at the activation's node when the projection is a fused gate_up)."""
        norm = self.emit_at[add.name][1][0]
        readers = self.consumers[norm]
        if len(readers) != 1 or not self._projection(readers[0]) or self.nodes[readers[0]].inputs[0] != norm:
            return
        proj = readers[0]
        at = next((n for n, (kind, info) in self.emit_at.items() if kind == "swiglu_linear" and info[0] == proj), proj)
        if any(self.order[c] <= self.order[at] for c in self.consumers[add.name] if c != norm):
            return
        self.norm_into[proj] = add.name
        self.norm_at[proj] = at
        self.fusions[add.name] = self.fusions[norm] = "add_rms_norm_linear"

    def _match_silu_mul(self, mul: Node) -> None:
        if len(mul.inputs) != 2:
            return
        act, up = (self.nodes[i] for i in mul.inputs)
        if act.op != "silu":
            return
        gate = self.nodes[act.inputs[0]]
        if gate.op != "slice" or not _last_dim(gate, len(gate.shape)):
            return
        gu = gate.inputs[0]
        n = gate.attrs["end"] - gate.attrs["start"]
        if gate.attrs["start"] != 0 or _slice_of(self.nodes, up.name, n, 2 * n) != gu or self.nodes[gu].shape[-1] != 2 * n:
            return
        kind = "swiglu_linear" if self._projection(gu) else "silu_and_mul"
        self.emit_at[mul.name] = (kind, (gu,))
        self.fusions[mul.name] = kind
        if self.consumers[act.name] == [mul.name] and act.name not in self.outputs:
            self.absorbed.add(act.name)  # else computed on the side, for whoever else reads it
            self.fusions[act.name] = kind

    def _projection(self, name: str) -> bool:
        """Whether `name` is a linear layer the GEMV can fuse the activation into (float or weight-only)."""
        node = self.nodes[name]
        if node.op == "linear":
            return len(self.nodes[node.inputs[0]].shape) == 2
        return node.op == "quant_linear" and node.attrs["method"] in ("w8a16", "w4a16")

    def _match_rope_qkv(self, attn: Node) -> None:
        if len(attn.inputs) != 3 or attn.attrs.get("kv_cache_dtype"):
            return
        qr, kr, vh = (self.nodes[i] for i in attn.inputs)
        if qr.op != "rope" or kr.op != "rope" or vh.op != "reshape":
            return
        if qr.inputs[1:] != kr.inputs[1:] or qr.attrs != kr.attrs or self.nodes[qr.inputs[2]].op != "param":
            return
        a = attn.attrs
        hq, hkv, d = a["num_heads"], a["num_kv_heads"], a["head_dim"]
        qh, kh = self.nodes[qr.inputs[0]], self.nodes[kr.inputs[0]]
        if qh.op != "reshape" or kh.op != "reshape" or qh.shape[1:] != [hq, d] or kh.shape[1:] != [hkv, d] \
                or vh.shape[1:] != [hkv, d]:
            return
        qkv = _slice_of(self.nodes, qh.inputs[0], 0, hq * d)
        if qkv is None or self.nodes[qkv].shape[-1] != (hq + 2 * hkv) * d or len(self.nodes[qkv].shape) != 2:
            return
        if _slice_of(self.nodes, kh.inputs[0], hq * d, (hq + hkv) * d) != qkv or \
                _slice_of(self.nodes, vh.inputs[0], (hq + hkv) * d, (hq + 2 * hkv) * d) != qkv:
            return
        if qr.name in self.emit_at or kr.name in self.emit_at:
            return
        scaling = float(qr.attrs["attention_scaling"])
        key = f"{qr.inputs[2]}@{scaling}"
        self.rope_tables[key] = (qr.inputs[2], scaling)
        info = (qkv, qr.inputs[1], hq, hkv, d, a["layer"], key)
        self.emit_at[qr.name] = ("rope_qkv", (kr.name,) + info)  # dropped as dead unless q or k is read
        self.absorbed.add(kr.name)
        self.emit_at[attn.name] = ("rope_attention", info)
        for n in (qr.name, kr.name, attn.name):
            self.fusions[n] = "rope_qkv"

    # -- emission ------------------------------------------------------------------------------------
    def compile(self) -> Program:
        self.match()
        taken: set[str] = set()
        var: dict[str, str] = {}
        stmts: list[_Stmt] = []
        for name in self.net.inputs:
            var[name] = _ident(name, taken)
        for node in self.nodes.values():
            if node.op == "param":
                var[node.name] = f"W[{node.name!r}]"
        for node in self.nodes.values():
            if node.op in ("param", "input") or node.name in self.absorbed:
                continue
            var[node.name] = _ident(node.name, taken)
            fused = self.emit_at.get(node.name)
            if self.norm_at.get(node.name) == node.name:
                stmts.append(self._norm_projection(node, var[node.name], var, ""))
                continue
            stmts.append(self._fused(node, fused, var, taken) if fused else self._plain(node, var))
        # absorbed nodes that someone outside their fusion still reads are already defined by the fusion
        ret = ", ".join(f"{o!r}: {var[o]}" for o in self.net.outputs)
        stmts = _drop_dead(stmts, {var[o] for o in self.net.outputs})
        lines = _with_dels(stmts, {var[o] for o in self.net.outputs} | {var[i] for i in self.net.inputs})
        args = ", ".join(var[i] for i in self.net.inputs)
        source = "\n".join([f"def program(ctx, W, {args}):"] + ["    " + ln for ln in lines]
                           + [f"    return {{{ret}}}", ""])
        return Program(source, None, dict(self.fusions), dict(self.rope_tables))

    def _plain(self, node: Node, var: dict[str, str]) -> _Stmt:
        out = var[node.name]
        xs = [var[i] for i in node.inputs]
        reads = tuple(x for x in xs if not x.startswith("W["))
        a = node.attrs
        op = node.op
        if op == "identity":
            code = f"{out} = {xs[0]}"
        elif op == "reshape":
            code = f"{out} = {xs[0]}.reshape({list(a['shape'])})"
        elif op == "slice":
            code = f"{out} = {xs[0]}.narrow({a['dim']}, {a['start']}, {a['end'] - a['start']})"
        elif op == "embedding":
            code = f"{out} = _embedding({xs[0]}, {xs[1]})"
        elif op == "linear":
            code = f"{out} = _linear({xs[0]}, {xs[1]}, {xs[2] if len(xs) == 3 else None})"
        elif op == "quant_linear":
            code = f"{out} = _quant_linear(N[{node.name!r}], [{', '.join(xs)}])"
        elif op in ("add", "sub", "mul", "div") and len(xs) == 2:
            code = f"{out} = _torch.{op}({xs[0]}, {xs[1]})"
        elif op == "silu":
            code = f"{out} = _silu({xs[0]})"
        elif op == "rms_norm" and self.nodes[node.inputs[1]].dtype == node.dtype:
            code = f"{out} = _rms_norm({xs[0]}, {xs[1]}, {a['eps']!r})"
        elif op == "attention":
            return _Stmt(f"{out} = _attention(ctx, N[{node.name!r}], {xs[0]}, {xs[1]}, {xs[2]}, False"
                         f"{''.join(', ' + x for x in xs[3:])})", (out,), reads, pure=False)
        else:  # everything else: the backend's node op
            return _Stmt(f"{out} = _op(N[{node.name!r}], [{', '.join(xs)}], ctx)", (out,), reads,
                         pure=op not in ("attention",))
        return _Stmt(code, (out,), reads)

    def _fused(self, node: Node, fused: tuple[str, tuple], var: dict[str, str], taken: set[str]) -> _Stmt:
        kind, info = fused
        out = var[node.name]
        if kind == "add_rms_norm":
            norm = self.nodes[info[0]]
            var[norm.name] = _ident(norm.name, taken)
            a, b = (var[i] for i in node.inputs)
            fused = node.name in self.norm_into.values()
            if fused:  # the sum comes from the projection's call; the norm here only for other readers (marks)
                out = _ident("_", taken)
            code = f"{out}, {var[norm.name]} = _add_rms_norm({a}, {b}, {var[norm.inputs[1]]}, {norm.attrs['eps']!r})"
            return _Stmt(code, (out, var[norm.name]), (a, b))
        if kind == "silu_and_mul":
            gu = var[info[0]]
            return _Stmt(f"{out} = _silu_and_mul({gu})", (out,), (gu,))
        if kind == "swiglu_linear":  # from the projection's inputs: gate_up itself is only computed if read
            proj = self.nodes[info[0]]
            if proj.name in self.norm_into:
                return self._norm_projection(proj, out, var, "swiglu_")
            xs = [var[i] for i in proj.inputs]
            reads = tuple(x for x in xs if not x.startswith("W["))
            if proj.op == "linear":
                return _Stmt(f"{out} = _swiglu_linear({xs[0]}, {xs[1]}, {xs[2] if len(xs) == 3 else None})", (out,),
                             reads)
            return _Stmt(f"{out} = _swiglu_quant_linear(N[{proj.name!r}], [{', '.join(xs)}])", (out,), reads)
        if kind == "rope_qkv":  # rotated q and k for whoever else reads them: the cache is written by the attention
            k_name, qkv, pos, hq, hkv, d, layer, key = info
            var[k_name] = _ident(k_name, taken)
            code = (f"{out}, {var[k_name]} = _rope_qkv(ctx, {var[qkv]}, {var[pos]}, {hq}, {hkv}, {d}, {layer}, "
                    f"{key!r}, False)")
            return _Stmt(code, (out, var[k_name]), (var[qkv], var[pos]))
        if kind == "rope_attention":
            qkv, pos, hq, hkv, d, layer, key = info
            code = (f"{out} = _rope_attention(ctx, N[{node.name!r}], {var[qkv]}, {var[pos]}, {hq}, {hkv}, {d}, "
                    f"{layer}, {key!r}{', True' if layer_block_fusion.reads_attention(self, node.name) else ''})")
            return _Stmt(code, (out,), (var[qkv], var[pos]), pure=False)
        if kind == "layer_block":
            return layer_block_fusion.emit(self, node, info, var, taken)
        raise AssertionError(kind)

    def _norm_projection(self, proj: Node, out: str, var: dict[str, str], swiglu: str) -> _Stmt:
        """`out, sum = _norm_[swiglu_][quant_]linear(a, b, norm weight, eps, ...)`: the add + norm the projection's
        call computes (see `_match_norm_into_projection`), then the projection (or its activation)."""
        add = self.nodes[self.norm_into[proj.name]]
        norm = self.nodes[proj.inputs[0]]
        a, b = (var[i] for i in add.inputs)
        head = f"{out}, {var[add.name]} = "
        args = f"{a}, {b}, {var[norm.inputs[1]]}, {norm.attrs['eps']!r}"
        rest = [var[i] for i in proj.inputs[1:]]
        if proj.op == "linear":
            code = f"{head}_norm_{swiglu}linear({args}, {rest[0]}, {rest[1] if len(rest) == 2 else None})"
        else:
            code = f"{head}_norm_{swiglu}quant_linear({args}, N[{proj.name!r}], [{', '.join(rest)}])"
        reads = (a, b) + tuple(x for x in rest if not x.startswith("W["))
        return _Stmt(code, (out, var[add.name]), reads)


def _drop_dead(stmts: list[_Stmt], keep: set[str]) -> list[_Stmt]:
    """Remove pure statements whose results nobody reads (views the fusions made unnecessary)."""
    while True:
        read = set(keep)
        for s in stmts:
            read.update(s.reads)
        alive = [s for s in stmts if not s.pure or any(d in read for d in s.defines)]
        if len(alive) == len(stmts):
            return stmts
        stmts = alive


def _with_dels(stmts: list[_Stmt], keep: set[str]) -> list[str]:
    """The statements with `del` after each value's last read, so memory is reused as in the interpreter."""
    last: dict[str, int] = {}
    for i, s in enumerate(stmts):
        for r in s.reads:
            last[r] = i
        for d in s.defines:
            last.setdefault(d, i)
    frees: dict[int, list[str]] = {}
    for v, i in last.items():
        if v not in keep:
            frees.setdefault(i, []).append(v)
    lines = []
    for i, s in enumerate(stmts):
        lines.append(s.code)
        if frees.get(i):
            lines.append("del " + ", ".join(sorted(frees[i])))
    return lines


def compile_network(net: Network, helpers: dict[str, Callable]) -> Program:
    """Generate and compile the program of `net`; `helpers` binds `_linear`, `_attention`, ... ."""
    prog = _Compiler(net).compile()
    namespace = dict(helpers)
    namespace["N"] = dict(net.nodes)
    exec(compile(prog.source, "<workbench cuda program>", "exec"), namespace)
    prog.fn = namespace["program"]
    return prog
