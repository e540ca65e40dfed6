"""The compiled program's `_norm_*linear` helpers: add + RMSNorm, then a projection, in one call
(runtime.cuda_program's fusion of a norm into its only reader).

A one-row step whose projection runs a GEMV of few programs over float weights computes the norm in the
GEMV's prologue and writes the sum from it (plugins/gemv.py, `norm=`): the decode step at batch 1 loses
those add + norm kernels. Any other step (more rows, a big grid, quantized weights, cuBLAS, a GEMM) runs
the add + norm kernel, then the projection as the unfused program would. Both give the same bits: the
norm's sum of squares is taken in fp64, where it does not depend on how the kernel tiles the row (see
plugins/rms_norm.py for the rare exception).
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
NORM_QUANTIZED = os.environ.get("WB_NORM_QUANTIZED", "0") == "1"  # int8 / int4 GEMVs too (not int4 TMA tiles)


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

    def fused(run, cfg, swiglu_cfg, n: int, swiglu: bool):
        """(result, sum) of one GEMV taking the norm, `run(cfg, swiglu)` -> (sum, y), where a config of few
        programs allows it (swiglu: the activation's config, else the projection's then the activation kernel),
        else None."""
        if swiglu:
            few = _few_programs(swiglu_cfg, n // 2)
            if few is not None:
                h, y = run(few, True)
                return y, h
            if swiglu_cfg is not None:
                return None
        few = _few_programs(cfg, n)
        if few is None:
            return None
        h, y = run(few, False)
        return (silu_and_mul(y) if swiglu else y), h

    def float_linear(a, b, g, eps, w, bias, swiglu):
        n, k = w.shape
        out = None
        if _one_row(a, g):
            out = fused(lambda cfg, sw: gemv(a, w, bias, cfg, swiglu=sw, norm=(b, g, eps)), policy.config(1, n, k),
                        policy.swiglu_config(1, n, k) if swiglu else None, n, swiglu)
        if out is None:
            h, x = add_rms_norm(a, b, g, eps)
            out = (swiglu_linear if swiglu else linear)(x, w, bias), h
        return out

    def quantized_linear(a, b, g, eps, node, rest, swiglu):
        method, ops = node.attrs["method"], dict(zip(node.attrs["operands"], rest))
        out = None
        if NORM_QUANTIZED and _one_row(a, g) and method in ("w8a16", "w4a16") and "smooth" not in ops:
            from workbench.plugins.gemv import INT4, INT8, takes_norm

            n, k = ops["qweight"].shape[0], a.shape[1]
            wq = INT8 if method == "w8a16" else INT4
            cfg = policy.quant_config(method, 1, n, k)
            swiglu_cfg = policy.swiglu_config(1, n, k, method) if swiglu else None
            run = lambda cfg, sw: _quant_gemv(method, a, ops, node.attrs.get("group_size"), cfg, sw,  # noqa: E731
                                              (b, g, eps))
            if takes_norm(swiglu_cfg if swiglu_cfg is not None else cfg, wq):
                out = fused(run, cfg, swiglu_cfg, n, swiglu)
        if out is None:
            h, x = add_rms_norm(a, b, g, eps)
            out = (swiglu_quant_linear if swiglu else quant_linear)(node, [x, *rest]), h
        return out

    return {"_norm_linear": lambda a, b, g, eps, w, bias: float_linear(a, b, g, eps, w, bias, False),
            "_norm_swiglu_linear": lambda a, b, g, eps, w, bias: float_linear(a, b, g, eps, w, bias, True),
            "_norm_quant_linear": lambda a, b, g, eps, node, rest: quantized_linear(a, b, g, eps, node, rest, False),
            "_norm_swiglu_quant_linear": lambda a, b, g, eps, node, rest: quantized_linear(a, b, g, eps, node, rest,
                                                                                           True)}
