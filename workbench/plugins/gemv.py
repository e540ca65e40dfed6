"""A skinny matrix product for the decode step: y [M, N] = x [M, K] @ w[N, K]^T with M <= 16, for
float weights and for the weight-only quantized formats (int8 per channel, int4 per group).

Memory-bound: every weight is read once, in tiles contiguous along K; SPLIT_K cuts K into
pieces for small N so that enough programs stream the weights at once, with a second,
fixed-order pass adding the pieces (no atomics, so results do not vary between runs).

Two ways to multiply a tile (the config's `dot`): the tensor cores (`tl.dot`, x padded to 16
rows), or, for one row, fp32 multiply-adds into a [BLOCK_N, BLOCK_K] accumulator reduced once at
the end (no padding, no layout change of the weight tile: what suits int8 weights converted in
registers).

Quantized weights, as `runtime.quant_ops` computes them: int8 values are exact in any float
dtype, the per-channel scale is applied to the fp32 sum; int4 values are unpacked from two per
byte (low nibble first), (q - zero) * scale per group in fp32, rounded to x's dtype.

`gated`: x is the gated MLP's gate_up [M, 2K] and the product is taken with silu(gate) * up,
computed while loading, with the rounding of `activation.silu_and_mul` (bit for bit the same
values): the MLP's down projection without its activation kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench.plugins.common import dot_in_fp32, interpreting, mma, rounded

FLOAT, INT8, INT4 = 0, 8, 4  # weight formats (the kernel's WQ)


@triton.jit
def _gemv(X, W, S, Z, B, Y, P, M, N, K, G, sxm, swn, sym, k_per_split, BLOCK_M: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
          GATED: tl.constexpr, FP32: tl.constexpr, WQ: tl.constexpr, GROUP: tl.constexpr, DOT: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    XDT: tl.constexpr = X.dtype.element_ty
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    nmask = offs_n < N
    mmask = offs_m < M
    if DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    else:
        acc2 = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    w_rows = W + offs_n[:, None].to(tl.int64) * swn
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < k_hi
        wmask = nmask[:, None] & kmask[None, :]
        # the weight tile [BLOCK_N, BLOCK_K]: `w` in x's dtype for the dot, `wf` in fp32 for multiply-adds
        if WQ == 8:
            q = tl.load(w_rows + offs_k[None, :], mask=wmask, other=0)
            if DOT:
                w = q.to(tl.float32).to(XDT)  # exact
            else:
                wf = q.to(tl.float32)
        elif WQ == 4:
            byte = tl.load(w_rows + offs_k[None, :] // 2, mask=wmask, other=0)
            q = ((byte >> ((offs_k[None, :] % 2) * 4).to(tl.uint8)) & 0xF).to(tl.float32)
            if GROUP % BLOCK_K == 0:  # one group per tile: a scale and a zero per row
                g = k0 // GROUP
                s = tl.load(S + offs_n * G + g, mask=nmask, other=0.0)[:, None]
                z = tl.load(Z + offs_n * G + g, mask=nmask, other=0).to(tl.float32)[:, None]
            else:
                g = offs_k[None, :] // GROUP
                s = tl.load(S + offs_n[:, None] * G + g, mask=wmask, other=0.0)
                z = tl.load(Z + offs_n[:, None] * G + g, mask=wmask, other=0).to(tl.float32)
            v = (q - z) * s
            if DOT and not FP32:
                w = v.to(XDT)  # round to nearest even on the device
            else:
                wf = rounded(v, XDT)
                w = wf
        else:
            w = tl.load(w_rows + offs_k[None, :], mask=wmask, other=0.0)
            if not DOT:
                wf = w.to(tl.float32)
        xmask = mmask[:, None] & kmask[None, :]
        if GATED:  # as activation.silu_and_mul: silu rounded, then the product rounded
            gt = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :], mask=xmask, other=0.0).to(tl.float32)
            u = tl.load(X + offs_m[:, None] * sxm + K + offs_k[None, :], mask=xmask, other=0.0)
            a = rounded(gt / (1.0 + tl.exp(-gt)), u.dtype)
            x = rounded(a * u.to(tl.float32), u.dtype).to(u.dtype)
        else:
            x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :], mask=xmask, other=0.0)
        if DOT:
            acc += mma(x, tl.trans(w), FP32)
        else:  # BLOCK_M == 1
            acc2 += wf * x.to(tl.float32)
    if not DOT:
        acc = tl.sum(acc2, axis=1)[None, :]
    if SPLIT_K == 1:
        if WQ == 8:
            acc = acc * tl.load(S + offs_n, mask=nmask, other=0.0)[None, :]
        if HAS_BIAS:
            acc += tl.load(B + offs_n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + offs_m[:, None] * sym + offs_n[None, :], acc.to(Y.dtype.element_ty),
                 mask=mmask[:, None] & nmask[None, :])
    else:
        part = P + (pid_k * 16 * N).to(tl.int64)
        tl.store(part + offs_m[:, None] * N + offs_n[None, :], acc, mask=mmask[:, None] & nmask[None, :])


@triton.jit
def _gemv_reduce(P, S, B, Y, M, N, sym, BLOCK: tl.constexpr, SPLIT_K: tl.constexpr, HAS_SCALE: tl.constexpr,
                 HAS_BIAS: tl.constexpr):
    m = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros([BLOCK], tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(P + (s * 16 + m) * N + offs, mask=mask, other=0.0)
    if HAS_SCALE:
        acc = acc * tl.load(S + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + m * sym + offs, acc.to(Y.dtype.element_ty), mask=mask)


# BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages[, dot]: a 5-tuple means dot=True
DEFAULT = (32, 256, 1, 4, 4)
DEFAULT_QUANT = (32, 256, 1, 4, 4, False)  # one row; more rows take the dot with this tiling


def _launch(x: torch.Tensor, w: torch.Tensor, n: int, k_w: int, wq: int, scales, zeros, group: int,
            bias: torch.Tensor | None, config, gated: bool) -> torch.Tensor:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m, k = x2.shape
    if gated:
        k //= 2
    if m > 16 or w.stride(-1) != 1 or k != k_w:
        raise ValueError(f"gemv: x {tuple(shape)} (gated={gated}) and weights {tuple(w.shape)} do not fit, or more "
                         f"than 16 rows, or the weights are not row-major")
    bn, bk, split, warps, stages, dot = (tuple(config) + (True,))[:6] if config else DEFAULT + (True,)
    dot = bool(dot) or m > 1
    if interpreting():
        bn, bk, warps, stages = 16, 32, 4, 1
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y.view(*shape[:-1], n)
    k_per = triton.cdiv(triton.cdiv(k, split), bk) * bk
    split = triton.cdiv(k, k_per)
    part = torch.empty(split, 16, n, dtype=torch.float32, device=x.device) if split > 1 else y
    b = bias if bias is not None else y
    s = scales if scales is not None else y
    z = zeros if zeros is not None else y
    groups = scales.shape[-1] if wq == INT4 else 1
    _gemv[(triton.cdiv(n, bn), split)](x2, w, s, z, b, y, part, m, n, k, groups, x2.stride(0), w.stride(0),
                                       y.stride(0), k_per, BLOCK_M=16 if dot else 1, BLOCK_N=bn, BLOCK_K=bk,
                                       SPLIT_K=split, HAS_BIAS=bias is not None, GATED=gated,
                                       FP32=dot_in_fp32(x.dtype), WQ=wq, GROUP=max(group, 1), DOT=dot,
                                       num_warps=warps, num_stages=stages)
    if split > 1:
        block = 1024 if not interpreting() else 64
        _gemv_reduce[(triton.cdiv(n, block), m)](part, s, b, y, m, n, y.stride(0), BLOCK=block, SPLIT_K=split,
                                                 HAS_SCALE=wq == INT8, HAS_BIAS=bias is not None, num_warps=4)
    return y.view(*shape[:-1], n)


def gemv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, config: tuple | None = None,
         gated: bool = False) -> torch.Tensor:
    """x [..., K] @ w[N, K]^T (+ bias) for at most 16 rows of x; gated: silu(x[..., :K]) * x[..., K:] @ w^T."""
    if w.dim() != 2:
        raise ValueError(f"gemv: weights of shape {tuple(w.shape)} are not a matrix")
    return _launch(x, w, w.shape[0], w.shape[1], FLOAT, None, None, 1, bias, config, gated)


def w8a16_gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
               config: tuple | None = None, gated: bool = False) -> torch.Tensor:
    """x [..., K] @ (int8 qweight [N, K] * per-channel scales [N])^T (+ bias), at most 16 rows."""
    return _launch(x, qweight, qweight.shape[0], qweight.shape[1], INT8, scales, None, 1, bias,
                   config or DEFAULT_QUANT, gated)


def w4a16_gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
               bias: torch.Tensor | None = None, config: tuple | None = None, gated: bool = False) -> torch.Tensor:
    """x [..., K] @ int4 weights (packed [N, K/2], per-group scales and zeros [N, G])^T (+ bias), at most 16 rows."""
    return _launch(x, qweight, qweight.shape[0], 2 * qweight.shape[1], INT4, scales, zeros, group_size, bias,
                   config or DEFAULT_QUANT, gated)


def gemv_ref(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, config=None,
             gated: bool = False) -> torch.Tensor:
    """torch's linear in fp32, rounded to x's dtype."""
    if gated:
        from workbench.plugins.activation import silu_and_mul_ref

        x = silu_and_mul_ref(x)
    y = x.float() @ w.float().T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
