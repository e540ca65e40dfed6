"""A decoder layer's work from o_proj to the next layer's qkv as one kernel (plugins/decode_block.py) in a decode
step of one row, where it was measured faster; the same work by the plugins' launches anywhere else.

runtime/layer_block_fusion.py (cuda_program's `layer_block` fusion) matches the layer blocks where `enabled` says
so and emits one `_layer_block(...)` call each; this module makes that helper. The choice is by shapes and device alone, so a debug
engine runs the same kernels as its plain engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from workbench.errors import WorkbenchError

# (hidden, intermediate, rows of the next projection, weight format) -> (the weight ring's KiB, paired slots): where the
# block made decode faster on an H100 (bench/results/h100_notes.md), and how it was fastest. Eighth session: Llama-3-8B
# bf16 and int8, its last layer's block through the logits too (calls 7-8: 180.8 -> 186.1 tok/s, int8 + logits 311.7
# -> 328.4; call 13, the last layer: 188.5 -> 188.8 and 336.3 -> 336.8), Llama-3.2-1B int8 with its logits layer as the
# last block's (call 8: 1401 -> 1473). Ninth session, the ring's size (calls 6-8): 8B int8 + logits 338.2 / 340.2 /
# 342.4 / 336.2 tok/s at 128 / 96 / 64 / 48 KiB, bf16 190.3 / 189.7 / 189.2 at 128 / 96 / 64; 1B int8 + logits 1544 /
# 1594 / 1618 at 128 / 96 / 64; and the 1B in bf16 by blocks with a ring of 64, 997.5 against 953.0 by its launches
# (the norms in the GEMVs' prologues; blocks with a ring of 128 had measured 944 against 952 in the eighth session,
# before attention merged its own partitions). Tenth session, paired slots (call 6): 1B bf16 1020 -> 1032, 8B bf16
# 194.6 -> 196.7, 8B int8 + logits 352.5 -> 349.5 (not paired).
H100_BLOCK = {(4096, 14336, 6144, "bf16"): (128, True), (4096, 14336, 128256, "bf16"): (128, True),
              (4096, 14336, 6144, "w8a16"): (64, False), (4096, 14336, 128256, "w8a16"): (64, False),
              (2048, 8192, 3072, "bf16"): (64, True), (2048, 8192, 128256, "bf16"): (64, True),
              (2048, 8192, 3072, "w8a16"): (64, False), (2048, 8192, 128256, "w8a16"): (64, False)}
# WB_LAYER_BLOCK: "auto" (the table above, on a Hopper GPU), "on" (every layer block the graph has: the one-row steps
# whose shapes the kernel takes run it, the others the launches; what the CPU tests use), "off"
MODES = ("auto", "on", "off")
MODE = os.environ.get("WB_LAYER_BLOCK", "auto")


def enabled(h: int, i: int, n_next: int, fmt: str, mode: str | None = None) -> bool:
    """Whether a layer block of these shapes is fused (see MODES)."""
    mode = MODE if mode is None else mode
    if mode not in MODES:
        raise WorkbenchError(f"WB_LAYER_BLOCK={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "off":
        return False
    if mode == "on":
        return True
    return (h, i, n_next, fmt) in H100_BLOCK and torch.cuda.is_available() \
        and torch.cuda.get_device_capability()[0] == 9


def make_helper(helpers: dict[str, Callable]) -> Callable:
    """`_layer_block(site, x, res, g2, eps2, o, gate_up, down, gn, eps_n, nxt)` -> (o, h1, act, d, h2, y); each
    projection is (weight, None) for float weights or (node, [operands]) for a weight-only int8 one."""
    counters: dict[int, torch.Tensor] = {}  # one a call site, kept: the kernel counts its launches in them

    def project(a, spec, swiglu=False):
        w, rest = spec
        if rest is None:
            return helpers["_swiglu_linear" if swiglu else "_linear"](a, w, None)
        return helpers["_swiglu_quant_linear" if swiglu else "_quant_linear"](w, [a, *rest])

    def launches(x, res, g2, eps2, o_spec, gu_spec, d_spec, gn, eps_n, nx_spec):
        o = project(x, o_spec)
        h1, n1 = helpers["_add_rms_norm"](res, o, g2, eps2)
        act = project(n1, gu_spec, swiglu=True)
        d = project(act, d_spec)
        h2, n2 = helpers["_add_rms_norm"](h1, d, gn, eps_n)
        return o, h1, act, d, h2, project(n2, nx_spec)

    def kernel_operands(specs):
        """(weights, scales): bf16 weights, or int8 words and their scales; None where the kernel cannot take them."""
        if all(rest is None for _, rest in specs):
            ws = [w for w, _ in specs]
            return (ws, None) if all(w.dtype == torch.bfloat16 for w in ws) else None
        if any(rest is None or len(rest) != 2 or node.attrs["method"] != "w8a16"
               or list(node.attrs["operands"]) != ["qweight", "scales"] for node, rest in specs):
            return None
        return [q.view(torch.int32) for _, (q, _) in specs], tuple(s for _, (_, s) in specs)

    def layer_block(site, x, res, g2, eps2, o_spec, gu_spec, d_spec, gn, eps_n, nx_spec):
        ops = None
        if x.is_cuda and x.dim() == 2 and x.shape[0] == 1 and x.dtype == torch.bfloat16 \
                and torch.cuda.get_device_capability(x.device)[0] == 9:
            ops = kernel_operands((o_spec, gu_spec, d_spec, nx_spec))
        if ops is not None:
            from workbench.plugins import decode_block as db
            from workbench.plugins.common import gdc

            (w_o, w_gu, w_dn, w_nx), scales = ops
            try:
                db.check(x, w_o, w_gu, w_dn, w_nx, 8 if scales else 0)
            except ValueError:
                ops = None
        if ops is None:
            return launches(x, res, g2, eps2, o_spec, gu_spec, d_spec, gn, eps_n, nx_spec)
        if site not in counters:
            counters[site] = torch.zeros(5, dtype=torch.int32, device=x.device)
        key = (x.shape[1], w_gu.shape[0] // 2, w_nx.shape[0], "w8a16" if scales else "bf16")
        ring_kib, paired = H100_BLOCK.get(key, (None, False))
        out = db.decode_block(x, res, g2, eps2, w_o, w_gu, w_dn, gn, eps_n, w_nx, counters[site], scales,
                              use_gdc=gdc("gemv")["USE_GDC"], ring_kib=ring_kib, paired=paired)
        return out["o"], out["h1"], out["act"], out["d"], out["h2"], out["y"]

    return layer_block
