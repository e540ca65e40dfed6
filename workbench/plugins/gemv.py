"""A skinny matrix product for the decode step: y [M, N] = x [M, K] @ w[N, K]^T with M <= 16, for
float weights and for the weight-only quantized formats (int8 per channel, int4 per group).

Memory-bound: every weight is read once, in tiles contiguous along K; SPLIT_K cuts K into
pieces for small N so that enough programs stream the weights at once, with a second,
fixed-order pass adding the pieces (no atomics, so results do not vary between runs).

Two ways to multiply a tile (the config's `dot`): the tensor cores (`tl.dot`, x padded to 16
rows), or, for one row, fp32 multiply-adds into an accumulator tile reduced once at the end (no
padding, no layout change of the weight tile). Quantized weights on the second way are read as
int32 words and unpacked with integer operations (`_gemv_words`): int8 -> float conversions are
slow on the GPU, and whole words are what the loads should move.

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
        if WQ == 8:  # (quantized weights take the dot here; one row takes _gemv_words)
            q = tl.load(w_rows + offs_k[None, :], mask=wmask, other=0)
            w = q.to(tl.float32).to(X.dtype.element_ty)  # exact
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
            if FP32:
                w = rounded(v, X.dtype.element_ty)
            else:
                w = v.to(X.dtype.element_ty)  # round to nearest even on the device
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
def _x_at(X, ko, kmask, K, GATED: tl.constexpr):
    """x[0, ko] in fp32; gated: silu(gate) * up at those columns, rounded as activation.silu_and_mul."""
    if GATED:
        gt = tl.load(X + ko, mask=kmask, other=0.0).to(tl.float32)
        u = tl.load(X + K + ko, mask=kmask, other=0.0)
        a = rounded(gt / (1.0 + tl.exp(-gt)), u.dtype)
        return rounded(a * u.to(tl.float32), u.dtype)
    else:
        return tl.load(X + ko, mask=kmask, other=0.0).to(tl.float32)


@triton.jit
def _gemv_words(X, Wd, S, Z, B, Y, P, N, K, G, swn, k_per_split, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, GATED: tl.constexpr, WQ: tl.constexpr,
                GROUP: tl.constexpr, PER_WORD: tl.constexpr, WORDS: tl.constexpr):
    """One row of x times quantized weights read as int32 words (PER_WORD values each): value j of every word
    is taken at once, against x's columns j, j + PER_WORD, ...; converted to fp32 with integer operations
    (the exponent-bias trick: the value's bits under the exponent of 2^23, minus 2^23), fp32 multiply-adds."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    acc2 = tl.zeros([BLOCK_N, WORDS], tl.float32)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    w_rows = Wd + offs_n[:, None].to(tl.int64) * swn
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_w = k0 // PER_WORD + tl.arange(0, WORDS)
        wkmask = offs_w < k_hi // PER_WORD
        words = tl.load(w_rows + offs_w[None, :], mask=nmask[:, None] & wkmask[None, :], other=0)
        if WQ == 4:
            if GROUP % BLOCK_K == 0:  # one group per tile: a scale and a zero per row
                s = tl.load(S + offs_n * G + k0 // GROUP, mask=nmask, other=0.0)[:, None]
                z = tl.load(Z + offs_n * G + k0 // GROUP, mask=nmask, other=0).to(tl.float32)[:, None]
            else:  # PER_WORD divides GROUP: one group per word
                g = (offs_w[None, :] * PER_WORD) // GROUP
                s = tl.load(S + offs_n[:, None] * G + g, mask=nmask[:, None] & wkmask[None, :], other=0.0)
                z = tl.load(Z + offs_n[:, None] * G + g, mask=nmask[:, None] & wkmask[None, :], other=0).to(tl.float32)
        for j in tl.static_range(PER_WORD):
            x = _x_at(X, offs_w * PER_WORD + j, wkmask, K, GATED)
            if WQ == 8:  # byte j, two's complement: (b ^ 0x80) = q + 128 under 2^23's exponent
                bits = ((words >> (8 * j)) & 0xFF) ^ 0x80
                wf = (bits | 0x4B000000).to(tl.float32, bitcast=True) - 8388736.0
            else:  # nibble j (low nibble of each byte first): q under 2^23's exponent
                bits = (words >> (4 * j)) & 0xF
                q = (bits | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
                wf = rounded((q - z) * s, X.dtype.element_ty)
            acc2 += wf * x[None, :]
    acc = tl.sum(acc2, axis=1)
    if SPLIT_K == 1:
        if WQ == 8:
            acc = acc * tl.load(S + offs_n, mask=nmask, other=0.0)
        if HAS_BIAS:
            acc += tl.load(B + offs_n, mask=nmask, other=0.0).to(tl.float32)
        tl.store(Y + offs_n, acc.to(Y.dtype.element_ty), mask=nmask)
    else:
        tl.store(P + (pid_k * 16 * N).to(tl.int64) + offs_n, acc, mask=nmask)


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
    per_word = 32 // wq if wq else 0
    # multiply-adds for one row; quantized weights then go as words, which needs whole words per row and group
    dot = bool(dot) or m > 1 or (wq and (k % per_word or group % per_word))
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
    if wq and not dot:
        _gemv_words[(triton.cdiv(n, bn), split)](x2, w.view(torch.int32), s, z, b, y, part, n, k, groups,
                                                 k // per_word, k_per, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split,
                                                 HAS_BIAS=bias is not None, GATED=gated, WQ=wq, GROUP=max(group, 1),
                                                 PER_WORD=per_word, WORDS=bk // per_word, num_warps=warps,
                                                 num_stages=stages)
    else:
            _gemv[(triton.cdiv(n, bn), split)](x2, w, s, z, b, y, part, m, n, k, groups, x2.stride(0), w.stride(0),
                                           y.stride(0), k_per, BLOCK_M=16 if dot else 1, BLOCK_N=bn, BLOCK_K=bk,
                                           SPLIT_K=split, HAS_BIAS=bias is not None, GATED=gated,
                                           FP32=dot_in_fp32(x.dtype), WQ=wq, GROUP=max(group, 1), DOT=bool(dot),
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
