"""A skinny matrix product for the decode step: y [M, N] = x [M, K] @ w[N, K]^T with M <= 16, for
float weights and for the weight-only quantized formats (int8 per channel, int4 per group).

Memory-bound: every weight is read once, in tiles contiguous along K; SPLIT_K cuts K into
pieces for small N so that enough programs stream the weights at once, with a second,
fixed-order pass adding the pieces (no atomics, so results do not vary between runs).

A tile is multiplied on the tensor cores (the config's `dot`, x padded to 16 rows) or, for one
row, by fp32 multiply-adds; quantized weights are read as int32 words (gemv_kernels.py, the
kernels, says how).

Quantized weights, as `runtime.quant_ops` computes them: int8 values are exact in any float
dtype, the per-channel scale is applied to the fp32 sum; int4 values are unpacked from two per
byte (low nibble first), (q - zero) * scale per group in fp32, rounded to x's dtype.

`swiglu`: the weights are the gated MLP's fused gate_up [2I, K]; each program takes a block of
output columns from the gate rows and the same block from the up rows, and writes silu(gate) * up
[M, I] with the roundings of the unfused product followed by `activation.silu_and_mul`: the MLP's
activation without a kernel of its own (and gate_up is never written).
"""

from __future__ import annotations

import os

import torch
import triton

from workbench.plugins.common import dot_in_fp32, gdc, interpreting, pow2
from workbench.plugins.gemv_kernels import _gemv, _gemv_reduce, _gemv_words
from workbench.plugins.gemv_tma import _gemv_tma
from workbench.plugins.gemv_tma_w4 import _gemv_tma_w4

FLOAT, INT8, INT4 = 0, 8, 4  # weight formats (the kernel's WQ)
# one-row int8 with 16-bit activations: words unpacked by byte permutes (WB_GEMV_PRMT=0: integer shifts)
PRMT = os.environ.get("WB_GEMV_PRMT", "1") != "0"
# one-row int8 TMA tiles take x's chunks by TMA too (WB_GEMV_XTMA=0: by loads, as float TMA tiles do)
X_TMA = os.environ.get("WB_GEMV_XTMA", "1") != "0"
# Under programmatic dependent launch, where a GEMV waits for the kernel before and lets the next one launch:
#   start:    waits, then lets the next launch, first thing (as every other decode-step kernel);
#   late:     waits first thing, lets the next launch once its weights are streamed (the next kernel's
#             programs then take the SMs this one's last programs leave, not the ones its later programs need);
#   prefetch: as late, and a one-row word-tile GEMV loads its first weight tile before waiting (weights are not
#             written by the kernel before, so reading them early overlaps that kernel's end).
#             TMA tiles wait inside their first iteration, once the pipeline's first copies are issued; every
#             offset of x adds a zero that the wait returns (common.gdc_wait_zero), which keeps x's reads after it.
#   auto:     (the default) late for float weights, prefetch for quantized ones.
# x's reads were not kept after the wait before the sixth session: Triton's scheduler put a wait inside a pipelined
# loop after the first iteration's reads, and the int8 and int4 tiles that take x by TMA read it in the pipeline's
# prologue, before any wait (tests/plugins/test_gemv_pdl.py checks the order, and caught it on an H100). Measured
# since, on an H100 (sixth session's call 5, decode_quant_fixed_{prefetch,late}_h100.json): prefetch against late,
# 8B bf16 177.1 against 180.7 tok/s, int8 + logits 311.9 against 309.4, int4 246.9 against 243.0, 1B int8 + logits
# 1408 against 1392, 1B bf16 equal (its GEMVs are register tiles: they wait first thing in both). Earlier sessions'
# numbers for prefetch (8B bf16 181.6 -> 182.6 tok/s, int8 303.2 -> 307.1) came from the racy kernels.
# (An `early` mode, prefetch letting the next kernel launch right after its wait, measured slower: 1B bf16 at batch 1
# 949 -> 863 tok/s, 8B 182.7 -> 180.4; fifth session's call 2, decode_quant_early_{prefetch,early}_h100.json.)
PDL_MODES = {"start": 1, "late": 2, "prefetch": 3}
PDL_MODE = os.environ.get("WB_GEMV_PDL", "auto")


# BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages[, kind]: kind True (a 5-tuple) multiplies tiles on the tensor
# cores, False by fp32 multiply-adds from register tiles (one row), "tma" by multiply-adds from tiles that TMA
# copies bring into shared memory, num_stages of them in flight (one row of float, int8 or int4 weights); "tma_prmt" as
# "tma", int8 tiles that take x by TMA unpacking their words by byte permutes instead of integer operations (the
# same values; which is faster depends on the shapes: 1B int8 + logits at batch 1 1408 -> 1434 tok/s, 8B 319.0 ->
# 316.9; fifth session's call 9, decode_quant_prmt2_{0,1}_h100.json); "tma_dot" as "tma", int4 tiles for several rows
# multiplying on the tensor cores (x padded to 16 rows) instead of by multiply-adds
TMA_KINDS = ("tma", "tma_prmt", "tma_dot")
DEFAULT = (32, 256, 1, 4, 4)
DEFAULT_QUANT = (32, 256, 1, 4, 4, False)  # one row; more rows take the dot with this tiling
SHARED_BYTES = 220 * 1024  # about what the dot's pipelined operand tiles may take (an H100 SM has 227 KiB)


def _launch(x: torch.Tensor, w: torch.Tensor, n: int, k_w: int, wq: int, scales, zeros, group: int,
            bias: torch.Tensor | None, config, swiglu: bool, norm: tuple | None = None):
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m, k = x2.shape
    if swiglu:
        n //= 2
    if m > 16 or w.stride(-1) != 1 or k != k_w:
        raise ValueError(f"gemv: x {tuple(shape)} and weights {tuple(w.shape)} do not fit, or more than 16 rows, or "
                         f"the weights are not row-major")
    h = None
    if norm is not None:  # x is rms_norm(x + residual): its sum h is written too
        res, nw, eps = norm
        if m != 1 or res.shape != shape or res.dtype != x.dtype or tuple(nw.shape) != (k,) or nw.dtype != x.dtype:
            raise ValueError(f"gemv: the norm takes one row: x {tuple(shape)} {x.dtype}, residual {tuple(res.shape)} "
                             f"{res.dtype} and norm weights {tuple(nw.shape)} {nw.dtype} must match")
        h = torch.empty_like(x2)
        norm_args = dict(R=res.reshape(1, k).contiguous(), NW=nw.contiguous(), H=h, eps=float(eps), NORM=True,
                         NORM_BLOCK=pow2(k))
    else:
        norm_args = dict(R=x2, NW=x2, H=x2, eps=0.0, NORM=False, NORM_BLOCK=1)
    bn, bk, split, warps, stages, kind = (tuple(config) + (True,))[:6] if config else DEFAULT + (True,)
    per_word = 32 // wq if wq else 0
    tma = kind in TMA_KINDS and (m == 1 or wq == INT4) and _tma_fits(w, wq, k, bn, bk, per_word)
    dot = m > 1 or kind not in (False, *TMA_KINDS)  # multiply-adds for one row only
    prefetch = not dot and stages > 1  # one row of word tiles: a register prefetch of the next tile
    if interpreting():
        bn, bk, warps, stages = 64, 128, 4, 1  # few, large programs: the interpreter pays per program and op
    if wq == INT4:  # int4 tiles take x by TMA (several rows too), with no norm in their prologue, within a group
        tma = tma and norm is None and x2.data_ptr() % 16 == 0 and group % bk == 0 \
            and (m == 1 or x2.stride(0) * x2.element_size() % 16 == 0)
        dot = dot and not tma
    if dot and not interpreting():  # pipeline stages that fit in shared memory (fp32 operands and swiglu's two
        # weight tiles take more)
        size = 4 if dot_in_fp32(x.dtype) else 2
        x_tiles = 3 if norm is not None else 1  # a norm pipelines x, the residual and the norm weights
        while stages > 1 and stages * ((2 if swiglu else 1) * bn + 16 * x_tiles) * bk * size > SHARED_BYTES:
            stages -= 1
    # quantized weights go as int32 words where rows and groups hold whole words (and a dot gets 16 of them)
    words = bool(wq) and not (k % per_word or group % per_word) and (not dot or bk // per_word >= 16)
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y.view(*shape[:-1], n)
    k_per = triton.cdiv(triton.cdiv(k, split), bk) * bk
    split = triton.cdiv(k, k_per)
    width = 2 * n if swiglu else n
    part = torch.empty(split, 16, width, dtype=torch.float32, device=x.device) if split > 1 else y
    b = bias if bias is not None else y
    s = scales if scales is not None else y
    z = zeros if zeros is not None else y
    groups = scales.shape[-1] if wq == INT4 else 1
    grid = (triton.cdiv(n, bn), split)
    launch = gdc("gemv")
    if PDL_MODE not in (*PDL_MODES, "auto"):
        raise ValueError(f"WB_GEMV_PDL={PDL_MODE!r}: choose one of {', '.join(PDL_MODES)}, auto")
    gdc_mode = PDL_MODES[PDL_MODE if PDL_MODE != "auto" else "late" if wq == FLOAT else "prefetch"]
    # one-row int8 with 16-bit x: byte-permute unpacking (inline PTX, so not in the interpreter)
    prmt = PRMT and wq == INT8 and x.dtype in (torch.bfloat16, torch.float16) and not interpreting()
    if tma and wq == INT4:
        _launch_tma_w4(x2, w, n, k, s, z, group, groups, b, y, part, k_per, bias is not None, swiglu, bn, bk, split,
                       warps, stages, gdc_mode, launch, kind == "tma_dot" and m > 1)
    elif tma:
        _launch_tma(x2, w, n, k, wq, per_word, s, b, y, part, k_per, bias is not None, swiglu, bn, bk, split, warps,
                    stages, gdc_mode, launch, norm_args, prmt, kind == "tma_prmt")
    elif words:
        _gemv_words[grid](x2, w.view(torch.int32), s, z, b, y, part, m, n, k, groups, x2.stride(0), k // per_word,
                          y.stride(0), k_per, BLOCK_M=16 if dot else 1, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split,
                          HAS_BIAS=bias is not None, SWIGLU=swiglu, FP32=dot_in_fp32(x.dtype), WQ=wq,
                          GROUP=max(group, 1), PER_WORD=per_word, WORDS=bk // per_word, DOT=dot,
                          PRMT=prmt and not dot, PREFETCH=prefetch, GDC_MODE=gdc_mode, num_warps=warps,
                          num_stages=stages, **norm_args, **launch)
    else:
        _gemv[grid](x2, w, s, z, b, y, part, m, n, k, groups, x2.stride(0), w.stride(0), y.stride(0), k_per,
                    BLOCK_M=16 if dot else 1, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, HAS_BIAS=bias is not None,
                    SWIGLU=swiglu, FP32=dot_in_fp32(x.dtype), WQ=wq, GROUP=max(group, 1), DOT=dot,
                    GDC_MODE=gdc_mode, num_warps=warps, num_stages=stages, **norm_args, **launch)
    if split > 1:
        block = 1024 if not interpreting() else 64
        _gemv_reduce[(triton.cdiv(n, block), m)](part, s, b, y, m, n, y.stride(0), BLOCK=block, SPLIT_K=split, WQ=wq,
                                                 HAS_BIAS=bias is not None, SWIGLU=swiglu, num_warps=4, **gdc("gemv"))
    y = y.view(*shape[:-1], n)
    return y if h is None else (h.view(shape), y)


def takes_norm(config, wq: int) -> bool:
    """Whether the one-row GEMV of this config computes a norm in its prologue with its own tiles: int4 TMA tiles do
    not (a norm runs the register tiles), so a caller keeping fused and unfused bits equal runs the norm kernel."""
    return not (wq == INT4 and config is not None and len(config) > 5 and config[5] in TMA_KINDS)


def _tma_fits(w: torch.Tensor, wq: int, k: int, bn: int, bk: int, per_word: int) -> bool:
    """Whether the weights can be read by TMA copies of [bn, bk] values: float, int8 or int4 (as words; int4 in
    whole 64-value chunks of x; _launch also keeps int4 tiles within a group), 16-byte aligned rows, boxes of at
    most 256 elements a side (where they cannot, the config runs as register tiles)."""
    if wq == INT8 and (k % 4 or bk % 4):
        return False
    if wq == INT4 and (k % 64 or bk % 64):
        return False
    row_bytes = w.stride(0) * w.element_size()
    return w.data_ptr() % 16 == 0 and row_bytes % 16 == 0 and bn <= 256 and bk // max(per_word, 1) <= 256


def _launch_tma(x2, w, n, k, wq, per_word, s, b, y, part, k_per, has_bias, swiglu, bn, bk, split, warps, stages,
                gdc_mode, launch, norm_args, prmt: bool, x_tma_prmt: bool) -> None:
    """The one-row GEMV with TMA-pipelined weight tiles (gemv_tma.py); byte permutes (`prmt`) where x comes by TMA
    only if `x_tma_prmt`."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    words = bk // max(per_word, 1)
    wv = w.view(torch.int32) if wq == INT8 else w
    desc = TensorDescriptor(wv, list(wv.shape), [wv.stride(0), 1], [bn, words])
    # int8: x by TMA too (gemv_tma.py): rows of 64 values, whole 16-byte-aligned ones, no norm to compute on the way
    x_tma = X_TMA and wq == INT8 and not norm_args["NORM"] and k % 64 == 0 and bk % 64 == 0 and x2.data_ptr() % 16 == 0
    xd = TensorDescriptor(x2, [k // 64, 64], [64, 1], [bk // 64, 64]) if x_tma else x2
    _gemv_tma[(triton.cdiv(n, bn), split)](
        x2, xd, desc, s, b, y, part, n, k, y.stride(0), k_per, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split,
        HAS_BIAS=has_bias, SWIGLU=swiglu, WQ=wq, PER_WORD=max(per_word, 1), WORDS=words,
        PRMT=prmt and (x_tma_prmt or not x_tma), X_TMA=x_tma,
        STAGES=max(stages, 1), GDC_MODE=gdc_mode, num_warps=warps, num_stages=1, **norm_args, **launch)


def _launch_tma_w4(x2, w, n, k, s, z, group, groups, b, y, part, k_per, has_bias, swiglu, bn, bk, split, warps,
                   stages, gdc_mode, launch, dot: bool) -> None:
    """The int4 GEMV with TMA-pipelined tiles (gemv_tma_w4.py), for up to 16 rows of x (`dot`: on the tensor
    cores)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    m = x2.shape[0]
    wv = w.view(torch.int32)  # packed [N, K / 2] bytes as [N, K / 8] words
    desc = TensorDescriptor(wv, list(wv.shape), [wv.stride(0), 1], [bn, bk // 8])
    block_m = 16 if dot else pow2(m)
    if m == 1:
        xd = TensorDescriptor(x2, [k // 64, 64], [64, 1], [bk // 64, 64])
    else:
        xd = TensorDescriptor(x2, [m, k], [x2.stride(0), 1], [block_m, bk])
    _gemv_tma_w4[(triton.cdiv(n, bn), split)](
        x2, xd, desc, s, z, b, y, part, m, n, k, groups, y.stride(0), k_per, BLOCK_M=block_m, BLOCK_N=bn, BLOCK_K=bk,
        SPLIT_K=split,
        HAS_BIAS=has_bias, SWIGLU=swiglu, GROUP=group, WORDS=bk // 8, ASM=not interpreting(),
        RN_ASM=x2.dtype == torch.bfloat16 and not interpreting(), DOT=dot, FP32=dot_in_fp32(x2.dtype),
        STAGES=max(stages, 1), GDC_MODE=gdc_mode,
        num_warps=warps, num_stages=1, **launch)


def _check_swiglu(w: torch.Tensor, swiglu: bool) -> None:
    if swiglu and w.shape[0] % 2:
        raise ValueError(f"gemv: swiglu needs gate and up rows, got an odd {w.shape[0]} rows")


def gemv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, config: tuple | None = None,
         swiglu: bool = False, norm: tuple | None = None):
    """x [..., K] @ w[N, K]^T (+ bias) for at most 16 rows of x; swiglu: w is the gated MLP's gate_up [2I, K] and the
    result is silu(gate) * up [..., I], as activation.silu_and_mul of the unfused product; norm = (residual,
    weight, eps): the product is of rms_norm.add_rms_norm(x, residual, weight, eps)'s norm, and (sum, y) comes back
    (one row)."""
    if w.dim() != 2:
        raise ValueError(f"gemv: weights of shape {tuple(w.shape)} are not a matrix")
    _check_swiglu(w, swiglu)
    return _launch(x, w, w.shape[0], w.shape[1], FLOAT, None, None, 1, bias, config, swiglu, norm)


def w8a16_gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
               config: tuple | None = None, swiglu: bool = False, norm: tuple | None = None):
    """x [..., K] @ (int8 qweight [N, K] * per-channel scales [N])^T (+ bias), at most 16 rows; swiglu, norm as
    gemv."""
    _check_swiglu(qweight, swiglu)
    return _launch(x, qweight, qweight.shape[0], qweight.shape[1], INT8, scales, None, 1, bias,
                   config or DEFAULT_QUANT, swiglu, norm)


def w4a16_gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
               bias: torch.Tensor | None = None, config: tuple | None = None, swiglu: bool = False,
               norm: tuple | None = None):
    """x [..., K] @ int4 weights (packed [N, K/2], per-group scales and zeros [N, G])^T (+ bias), at most 16 rows;
    swiglu, norm as gemv."""
    _check_swiglu(qweight, swiglu)
    return _launch(x, qweight, qweight.shape[0], 2 * qweight.shape[1], INT4, scales, zeros, group_size, bias,
                   config or DEFAULT_QUANT, swiglu, norm)


def gemv_ref(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, config=None,
             swiglu: bool = False) -> torch.Tensor:
    """torch's linear in fp32, rounded to x's dtype (swiglu: then silu(gate) * up)."""
    y = x.float() @ w.float().T
    if bias is not None:
        y = y + bias.float()
    y = y.to(x.dtype)
    if swiglu:
        from workbench.plugins.activation import silu_and_mul_ref

        y = silu_and_mul_ref(y)
    return y


def w8a16_gemv_ref(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
                   config=None, swiglu: bool = False) -> torch.Tensor:
    """runtime.quant_ops.w8a16 (then silu(gate) * up when swiglu)."""
    from workbench.plugins.activation import silu_and_mul_ref
    from workbench.runtime.quant_ops import w8a16

    y = w8a16(x, {"qweight": qweight, "scales": scales, **({"bias": bias} if bias is not None else {})})
    return silu_and_mul_ref(y) if swiglu else y


def w4a16_gemv_ref(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                   bias: torch.Tensor | None = None, config=None, swiglu: bool = False) -> torch.Tensor:
    """runtime.quant_ops.w4a16 (then silu(gate) * up when swiglu)."""
    from workbench.plugins.activation import silu_and_mul_ref
    from workbench.runtime.quant_ops import w4a16

    ops = {"qweight": qweight, "scales": scales, "zeros": zeros, **({"bias": bias} if bias is not None else {})}
    y = w4a16(x, ops, group_size)
    return silu_and_mul_ref(y) if swiglu else y
