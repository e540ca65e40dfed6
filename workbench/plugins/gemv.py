"""A skinny matrix product for the decode step: y [M, N] = x [M, K] @ w[N, K]^T with M <= 16.

Memory-bound: every weight is read once, in tiles contiguous along K; SPLIT_K cuts K into
pieces for small N so that enough programs stream the weights at once, with a second,
fixed-order pass adding the pieces (no atomics, so results do not vary between runs).

`gated`: x is the gated MLP's gate_up [M, 2K] and the product is taken with silu(gate) * up,
computed while loading, with the rounding of `activation.silu_and_mul` (bit for bit the same
values): the MLP's down projection without its activation kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench.plugins.common import dot_in_fp32, interpreting, mma, rounded


@triton.jit
def _gemv(X, W, B, Y, P, M, N, K, sxm, swn, sym, k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, GATED: tl.constexpr,
          FP32: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    nmask = offs_n < N
    mmask = offs_m < M
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    w_rows = W + offs_n[:, None].to(tl.int64) * swn
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < k_hi
        w = tl.load(w_rows + offs_k[None, :], mask=nmask[:, None] & kmask[None, :], other=0.0)
        xmask = mmask[:, None] & kmask[None, :]
        if GATED:  # as activation.silu_and_mul: silu rounded, then the product rounded
            g = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :], mask=xmask, other=0.0).to(tl.float32)
            u = tl.load(X + offs_m[:, None] * sxm + K + offs_k[None, :], mask=xmask, other=0.0)
            a = rounded(g / (1.0 + tl.exp(-g)), u.dtype)
            x = rounded(a * u.to(tl.float32), u.dtype).to(u.dtype)
        else:
            x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :], mask=xmask, other=0.0)
        acc += mma(x, tl.trans(w), FP32)
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(B + offs_n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + offs_m[:, None] * sym + offs_n[None, :], acc.to(Y.dtype.element_ty),
                 mask=mmask[:, None] & nmask[None, :])
    else:
        part = P + (pid_k * BLOCK_M * N).to(tl.int64)
        tl.store(part + offs_m[:, None] * N + offs_n[None, :], acc, mask=mmask[:, None] & nmask[None, :])


@triton.jit
def _gemv_reduce(P, B, Y, M, N, sym, BLOCK_M: tl.constexpr, BLOCK: tl.constexpr, SPLIT_K: tl.constexpr,
                 HAS_BIAS: tl.constexpr):
    m = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros([BLOCK], tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(P + (s * BLOCK_M + m) * N + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + m * sym + offs, acc.to(Y.dtype.element_ty), mask=mask)


DEFAULT = (32, 256, 1, 4, 4)  # BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages


def gemv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
         config: tuple[int, int, int, int, int] | None = None, gated: bool = False) -> torch.Tensor:
    """x [..., K] @ w[N, K]^T (+ bias) for at most 16 rows of x; gated: silu(x[..., :K]) * x[..., K:] @ w^T."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m, k = x2.shape
    if gated:
        k //= 2
    n = w.shape[0]
    if m > 16 or w.stride(1) != 1 or w.shape[1] != k:
        raise ValueError(f"gemv: x {tuple(shape)} (gated={gated}) and w {tuple(w.shape)} do not fit, or more than 16 "
                         f"rows, or w is not row-major")
    bn, bk, split, warps, stages = config or DEFAULT
    if interpreting():
        bn, bk, warps, stages = 16, 32, 4, 1
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y.view(*shape[:-1], n)
    k_per = triton.cdiv(triton.cdiv(k, split), bk) * bk
    split = triton.cdiv(k, k_per)
    part = torch.empty(split, 16, n, dtype=torch.float32, device=x.device) if split > 1 else y
    b = bias if bias is not None else y
    _gemv[(triton.cdiv(n, bn), split)](x2, w, b, y, part, m, n, k, x2.stride(0), w.stride(0), y.stride(0), k_per,
                                       BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, HAS_BIAS=bias is not None,
                                       GATED=gated, FP32=dot_in_fp32(x.dtype), num_warps=warps, num_stages=stages)
    if split > 1:
        block = 1024 if not interpreting() else 64
        _gemv_reduce[(triton.cdiv(n, block), m)](part, b, y, m, n, y.stride(0), BLOCK_M=16, BLOCK=block,
                                                 SPLIT_K=split, HAS_BIAS=bias is not None, num_warps=4)
    return y.view(*shape[:-1], n)


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
