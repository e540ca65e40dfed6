"""The compiled program's `_norm_*linear` helpers: add + RMSNorm, then a projection, in one call
(runtime.cuda_program's fusion of a norm into its only reader).

A one-row step whose projection runs a GEMV of few programs over float weights computes the norm in the
GEMV's prologue and writes the sum from it (plugins/gemv.py, `norm=`): the decode step at batch 1 loses
those add + norm kernels. Any other step (more rows, a big grid, quantized weights, cuBLAS, a GEMM) runs
the add + norm kernel, then the projection as the unfused program would. Both give the same bits: the norm's sum of squares is taken
in fp64, where it does not depend on how the kernel tiles the row.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton

# The GEMVs that take the norm: at most this many programs (each reads the whole row for the norm, so a big grid
# pays for it many times; WB_NORM_MAX_PROGRAMS overrides it for measuring), and float weights (H100, this session's
# call 4: 1B bf16 at batch 1 922 -> 948 tok/s with 512 or 1024, 8B bf16 181.8 -> 179.5 with 1024 (its qkv GEMV has
# 768 programs), 8B int8 304 -> 269 (its gate_up has 224 programs: the int8 kernel normalises four x columns per
# word, in every thread that holds them, which costs more than the norm kernel saves).
NORM_MAX_PROGRAMS = int(os.environ.get("WB_NORM_MAX_PROGRAMS", "512"))
NORM_QUANTIZED = os.environ.get("WB_NORM_QUANTIZED", "0") == "1"


def _one_row(a: torch.Tensor, g: torch.Tensor) -> bool:
    return a.dim() == 2 and a.shape[0] == 1 and g.dtype == a.dtype


def _few_programs(cfg, n: int):
    """cfg if its GEMV over n output columns runs at most NORM_MAX_PROGRAMS programs (a norm in the prologue), else
    None."""
    if cfg is None:
        return None
    return cfg if triton.cdiv(n, cfg[0]) * (cfg[2] if len(cfg) > 2 else 1) <= NORM_MAX_PROGRAMS else None


def _quant_gemv(method: str, x, ops: dict, group, cfg, swiglu: bool, norm: tuple):
    from workbench.plugins.gemv import w4a16_gemv, w8a16_gemv

    if method == "w8a16":
        return w8a16_gemv(x, ops["qweight"], ops["scales"], ops.get("bias"), cfg, swiglu, norm)
    return w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], group, ops.get("bias"), cfg, swiglu, norm)


def norm_helpers(policy, linear: Callable, swiglu_linear: Callable, quant_linear: Callable,
                 swiglu_quant_linear: Callable) -> dict[str, Callable]:
    """The four helpers, over the program's own projection helpers and the decode step's GEMV policy; each
    returns (result, sum): the statement is then named after the projection wherever it is timed."""
    from workbench.plugins.activation import silu_and_mul
    from workbench.plugins.gemv import gemv
    from workbench.plugins.rms_norm import add_rms_norm

    def norm_linear(a, b, g, eps, w, bias):
        cfg = _few_programs(policy.config(1, w.shape[0], w.shape[1]), w.shape[0]) if _one_row(a, g) else None
        if cfg is not None:
            h, y = gemv(a, w, bias, cfg, norm=(b, g, eps))
            return y, h
        h, x = add_rms_norm(a, b, g, eps)
        return linear(x, w, bias), h

    def norm_swiglu_linear(a, b, g, eps, w, bias):
        if _one_row(a, g):
            cfg = _few_programs(policy.swiglu_config(1, w.shape[0], w.shape[1]), w.shape[0] // 2)
            if cfg is not None:
                h, y = gemv(a, w, bias, cfg, swiglu=True, norm=(b, g, eps))
                return y, h
            cfg = _few_programs(policy.config(1, w.shape[0], w.shape[1]), w.shape[0])
            if cfg is not None and policy.swiglu_config(1, w.shape[0], w.shape[1]) is None:
                h, y = gemv(a, w, bias, cfg, norm=(b, g, eps))
                return silu_and_mul(y), h
        h, x = add_rms_norm(a, b, g, eps)
        return swiglu_linear(x, w, bias), h

    def _quant_fusable(node, a, g, ops) -> bool:
        return NORM_QUANTIZED and _one_row(a, g) and node.attrs["method"] in ("w8a16", "w4a16") and "smooth" not in ops

    def norm_quant_linear(a, b, g, eps, node, rest):
        method, ops = node.attrs["method"], dict(zip(node.attrs["operands"], rest))
        if _quant_fusable(node, a, g, ops):
            cfg = _few_programs(policy.quant_config(method, 1, ops["qweight"].shape[0], a.shape[1]),
                                ops["qweight"].shape[0])
            if cfg is not None:
                h, y = _quant_gemv(method, a, ops, node.attrs.get("group_size"), cfg, False, (b, g, eps))
                return y, h
        h, x = add_rms_norm(a, b, g, eps)
        return quant_linear(node, [x, *rest]), h

    def norm_swiglu_quant_linear(a, b, g, eps, node, rest):
        method, ops = node.attrs["method"], dict(zip(node.attrs["operands"], rest))
        if _quant_fusable(node, a, g, ops):
            n, k = ops["qweight"].shape[0], a.shape[1]
            cfg = _few_programs(policy.swiglu_config(1, n, k, method), n // 2)
            if cfg is not None:
                h, y = _quant_gemv(method, a, ops, node.attrs.get("group_size"), cfg, True, (b, g, eps))
                return y, h
            cfg = _few_programs(policy.quant_config(method, 1, n, k), n)
            if cfg is not None and policy.swiglu_config(1, n, k, method) is None:
                h, y = _quant_gemv(method, a, ops, node.attrs.get("group_size"), cfg, False, (b, g, eps))
                return silu_and_mul(y), h
        h, x = add_rms_norm(a, b, g, eps)
        return swiglu_quant_linear(node, [x, *rest]), h

    return {"_norm_linear": norm_linear, "_norm_swiglu_linear": norm_swiglu_linear,
            "_norm_quant_linear": norm_quant_linear, "_norm_swiglu_quant_linear": norm_swiglu_quant_linear}
