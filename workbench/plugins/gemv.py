"""A skinny matrix product for the decode step: y [M, N] = x [M, K] @ w[N, K]^T with M <= 16, for
float weights and for the weight-only quantized formats (int8 per channel, int4 per group).

Memory-bound: every weight is read once, in tiles contiguous along K; SPLIT_K cuts K into
pieces for small N so that enough programs stream the weights at once, with a second,
fixed-order pass adding the pieces (no atomics, so results do not vary between runs).

Two ways to multiply a tile (the config's `dot`): the tensor cores (`tl.dot`, x padded to 16
rows), or, for one row, fp32 multiply-adds into an accumulator tile reduced once at the end (no
padding, no layout change of the weight tile). Quantized weights are read as int32 words and
unpacked with integer operations (`_gemv_words`: int8 -> float conversions are slow on the GPU,
and whole words are what the loads should move); value j of each word meets x's columns j,
j + 4 (or 8), ..., so a dot takes one tensor-core product per j.

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
import triton.language as tl

from workbench.plugins.common import dot_in_fp32, gdc, gdc_begin, gdc_trigger, gdc_wait, interpreting, mma, rounded

FLOAT, INT8, INT4 = 0, 8, 4  # weight formats (the kernel's WQ)
# one-row int8 with 16-bit activations: words unpacked by byte permutes (WB_GEMV_PRMT=0: integer shifts)
PRMT = os.environ.get("WB_GEMV_PRMT", "1") != "0"
# Under programmatic dependent launch, where a GEMV waits for the kernel before and lets the next one launch:
#   start:    waits, then lets the next launch, first thing (as every other decode-step kernel);
#   late:     waits first thing, lets the next launch once its weights are streamed (the next kernel's
#             programs then take the SMs this one's last programs leave, not the ones its later programs need);
#   prefetch: as late, and a one-row word-tile GEMV loads its first weight tile before waiting (weights are not
#             written by the kernel before, so reading them early overlaps that kernel's end).
# Measured on an H100 (bench/results/decode_quant_pdl_{start,late,prefetch}.json): within 1% of each other on
# 8B, late 6% faster than start for 1B int8 at batch 1.
PDL_MODES = {"start": 1, "late": 2, "prefetch": 3}
PDL_MODE = os.environ.get("WB_GEMV_PDL", "late")  # late: 1B int8 batch 1 0.878 -> 0.827 ms, the rest within 1%


@triton.jit
def _tile(W, S, Z, rows, rmask, offs_k, kmask, k0, G, swn, WQ: tl.constexpr, GROUP: tl.constexpr,
          BLOCK_K: tl.constexpr, FP32: tl.constexpr, DT: tl.constexpr):
    """The weight tile [rows, BLOCK_K] in DT (fp32 values rounded to DT when FP32): float weights as stored, int8
    exact, int4 unpacked from two per byte and dequantized per group."""
    mask = rmask[:, None] & kmask[None, :]
    ptrs = W + rows[:, None].to(tl.int64) * swn
    if WQ == 8:
        q = tl.load(ptrs + offs_k[None, :], mask=mask, other=0)
        w = q.to(tl.float32).to(DT)  # exact
    elif WQ == 4:
        byte = tl.load(ptrs + offs_k[None, :] // 2, mask=mask, other=0)
        q = ((byte >> ((offs_k[None, :] % 2) * 4).to(tl.uint8)) & 0xF).to(tl.float32)
        if GROUP % BLOCK_K == 0:  # one group per tile: a scale and a zero per row
            s = tl.load(S + rows * G + k0 // GROUP, mask=rmask, other=0.0)[:, None]
            z = tl.load(Z + rows * G + k0 // GROUP, mask=rmask, other=0).to(tl.float32)[:, None]
        else:
            g = offs_k[None, :] // GROUP
            s = tl.load(S + rows[:, None] * G + g, mask=mask, other=0.0)
            z = tl.load(Z + rows[:, None] * G + g, mask=mask, other=0).to(tl.float32)
        v = (q - z) * s
        if FP32:
            w = rounded(v, DT)
        else:
            w = v.to(DT)  # round to nearest even on the device
    else:
        w = tl.load(ptrs + offs_k[None, :], mask=mask, other=0.0)
    return w


@triton.jit
def _accumulate(acc, x, w, DOT: tl.constexpr, FP32: tl.constexpr):
    """acc [BLOCK_M, BLOCK_N] += x @ w^T on the tensor cores, or acc [BLOCK_N, BLOCK_K] += w * x (one row)."""
    if DOT:
        return acc + mma(x, tl.trans(w), FP32)
    else:
        return acc + w.to(tl.float32) * x.to(tl.float32)


@triton.jit
def _epilogue(acc, S, B, cols, cmask, WQ: tl.constexpr, HAS_BIAS: tl.constexpr):
    """acc [BLOCK_M, BLOCK_N] with the int8 per-channel scale and the bias of those output columns."""
    if WQ == 8:
        acc = acc * tl.load(S + cols, mask=cmask, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _swiglu(g, u, DT: tl.constexpr):
    """silu(g) * u from fp32 sums, with the roundings of the unfused path: the projection's outputs rounded to DT,
    then activation.silu_and_mul's (silu rounded, the product rounded)."""
    g = rounded(g, DT)
    u = rounded(u, DT)
    a = rounded(g / (1.0 + tl.exp(-g)), DT)
    return rounded(a * u, DT)


@triton.jit
def _finish(acc, accu, S, B, Y, P, offs_m, offs_n, mmask, nmask, N, sym, pid_k, SPLIT_K: tl.constexpr,
            WQ: tl.constexpr, HAS_BIAS: tl.constexpr, SWIGLU: tl.constexpr):
    """Store the sums [BLOCK_M, BLOCK_N] (accu: the up rows' when SWIGLU): scaled, biased and activated into Y,
    or as partial sums [SPLIT_K, 16, N or 2N] (the gate's, then the up's) for _gemv_reduce."""
    omask = mmask[:, None] & nmask[None, :]
    if SPLIT_K == 1:
        acc = _epilogue(acc, S, B, offs_n, nmask, WQ, HAS_BIAS)
        if SWIGLU:
            acc = _swiglu(acc, _epilogue(accu, S, B, N + offs_n, nmask, WQ, HAS_BIAS), Y.dtype.element_ty)
        tl.store(Y + offs_m[:, None] * sym + offs_n[None, :], acc.to(Y.dtype.element_ty), mask=omask)
    else:
        width = 2 * N if SWIGLU else N
        part = P + (pid_k * 16 * width).to(tl.int64) + offs_m[:, None] * width
        tl.store(part + offs_n[None, :], acc, mask=omask)
        if SWIGLU:
            tl.store(part + N + offs_n[None, :], accu, mask=omask)


@triton.jit
def _gemv(X, W, S, Z, B, Y, P, M, N, K, G, sxm, swn, sym, k_per_split, BLOCK_M: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
          SWIGLU: tl.constexpr, FP32: tl.constexpr, WQ: tl.constexpr, GROUP: tl.constexpr, DOT: tl.constexpr,
          GDC_MODE: tl.constexpr, USE_GDC: tl.constexpr):
    """GDC_MODE: see PDL_MODES (float tiles take no register prefetch: it slowed the 8B bf16 step by 12% on an
    H100, so `prefetch` acts as `late` here)."""
    if GDC_MODE == 1:
        gdc_begin(USE_GDC)
    else:
        gdc_wait(USE_GDC)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    DT = X.dtype.element_ty
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    nmask = offs_n < N
    mmask = offs_m < M
    if DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        accu = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        accu = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < k_hi
        x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :], mask=mmask[:, None] & kmask[None, :], other=0.0)
        w = _tile(W, S, Z, offs_n, nmask, offs_k, kmask, k0, G, swn, WQ, GROUP, BLOCK_K, FP32, DT)
        acc = _accumulate(acc, x, w, DOT, FP32)
        if SWIGLU:  # the up rows, N below the gate rows
            wu = _tile(W, S, Z, N + offs_n, nmask, offs_k, kmask, k0, G, swn, WQ, GROUP, BLOCK_K, FP32, DT)
            accu = _accumulate(accu, x, wu, DOT, FP32)
    if GDC_MODE >= 2:
        gdc_trigger(USE_GDC)
    if not DOT:
        acc = tl.sum(acc, axis=1)[None, :]
        accu = tl.sum(accu, axis=1)[None, :]
    _finish(acc, accu, S, B, Y, P, offs_m, offs_n, mmask, nmask, N, sym, pid_k, SPLIT_K, WQ, HAS_BIAS, SWIGLU)


@triton.jit
def _word_values(words, j, s, z, WQ: tl.constexpr, DT: tl.constexpr):
    """Value j of every int32 word in fp32, converted with integer operations: its bits put under the exponent
    of 2^23, minus 2^23 (int8: two's complement, b ^ 0x80 = q + 128; int4: low nibble first, then dequantized)."""
    if WQ == 8:
        bits = ((words >> (8 * j)) & 0xFF) ^ 0x80
        return (bits | 0x4B000000).to(tl.float32, bitcast=True) - 8388736.0
    else:
        bits = (words >> (4 * j)) & 0xF
        q = (bits | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
        return rounded((q - z) * s, DT)


@triton.jit
def _int8_word_floats(words):
    """The four int8 values of every int32 word as fp32 q + 1152, in 11 instructions per word: the sign bits
    flipped (q + 128), each byte permuted under fp16's 1024 exponent (1024 + q + 128, exact), widened to fp32."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .b32 t, lo, hi;
        .reg .b16 h0, h1, h2, h3;
        xor.b32 t, $4, 0x80808080;
        prmt.b32 lo, t, 0x64646464, 0x5140;
        prmt.b32 hi, t, 0x64646464, 0x5342;
        mov.b32 {h0, h1}, lo;
        mov.b32 {h2, h3}, hi;
        cvt.f32.f16 $0, h0;
        cvt.f32.f16 $1, h1;
        cvt.f32.f16 $2, h2;
        cvt.f32.f16 $3, h3;
        }
        """,
        constraints="=r,=r,=r,=r,r", args=[words], dtype=(tl.float32, tl.float32, tl.float32, tl.float32),
        is_pure=True, pack=1)


@triton.jit
def _x_columns(X, offs_w, w_hi):
    """x's columns 4w, 4w + 1, 4w + 2, 4w + 3 of the words w in fp32 (rows of 1), zero past w_hi."""
    mask = offs_w < w_hi
    x0 = tl.load(X + offs_w * 4, mask=mask, other=0.0).to(tl.float32)[None, :]
    x1 = tl.load(X + offs_w * 4 + 1, mask=mask, other=0.0).to(tl.float32)[None, :]
    x2 = tl.load(X + offs_w * 4 + 2, mask=mask, other=0.0).to(tl.float32)[None, :]
    x3 = tl.load(X + offs_w * 4 + 3, mask=mask, other=0.0).to(tl.float32)[None, :]
    return x0, x1, x2, x3


@triton.jit
def _group_params(S, Z, rows, rmask, offs_w, wkmask, k0, G, GROUP: tl.constexpr, BLOCK_K: tl.constexpr,
                  PER_WORD: tl.constexpr):
    """int4 scales and zeros of a word tile: per row when one group covers the tile, else per word."""
    if GROUP % BLOCK_K == 0:
        s = tl.load(S + rows * G + k0 // GROUP, mask=rmask, other=0.0)[:, None]
        z = tl.load(Z + rows * G + k0 // GROUP, mask=rmask, other=0).to(tl.float32)[:, None]
    else:  # PER_WORD divides GROUP: one group per word
        g = (offs_w[None, :] * PER_WORD) // GROUP
        mask = rmask[:, None] & wkmask[None, :]
        s = tl.load(S + rows[:, None] * G + g, mask=mask, other=0.0)
        z = tl.load(Z + rows[:, None] * G + g, mask=mask, other=0).to(tl.float32)
    return s, z


@triton.jit
def _gemv_words(X, Wd, S, Z, B, Y, P, M, N, K, G, sxm, swn, sym, k_per_split, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
                SWIGLU: tl.constexpr, FP32: tl.constexpr, WQ: tl.constexpr, GROUP: tl.constexpr,
                PER_WORD: tl.constexpr, WORDS: tl.constexpr, DOT: tl.constexpr, PRMT: tl.constexpr,
                PREFETCH: tl.constexpr, GDC_MODE: tl.constexpr, USE_GDC: tl.constexpr):
    """x times quantized weights read as int32 words (PER_WORD values each): value j of every word is taken at
    once, against x's columns j, j + PER_WORD, ...; for one row by fp32 multiply-adds, for more (DOT) by one
    tensor-core dot per j of the dequantized values (exact for int8, rounded to x's dtype for int4).

    PRMT (int8, one row of 16-bit x): the multiply-adds take q + 1152 from _int8_word_floats, and 1152 * sum(x)
    comes off the sums at the end. Each product is exact in fp32 (11 by 8 or 11 significant bits), so only the
    accumulation rounds, on sums about 1152 / |q| larger: still near fp32 precision, far below x's.

    PREFETCH: the next tile's words are loaded into registers before the current tile is multiplied, so a
    program keeps a load in flight while it computes (Triton pipelines only the loads that feed a dot)."""
    if GDC_MODE == 1:
        gdc_begin(USE_GDC)
    elif GDC_MODE == 2 or not PREFETCH:
        gdc_wait(USE_GDC)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    DT = X.dtype.element_ty
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    nmask = offs_n < N
    mmask = offs_m < M
    if DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        accu = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, WORDS], tl.float32)
        accu = tl.zeros([BLOCK_N, WORDS], tl.float32)
    xsum = tl.zeros([1, WORDS], tl.float32)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    gate_rows = Wd + offs_n[:, None].to(tl.int64) * swn
    up_rows = Wd + (N + offs_n[:, None]).to(tl.int64) * swn
    w_hi = k_hi // PER_WORD
    if PREFETCH:  # the first tile; each iteration then loads the next one before using the current
        first = k_lo // PER_WORD + tl.arange(0, WORDS)
        next_words = tl.load(gate_rows + first[None, :], mask=nmask[:, None] & (first < w_hi)[None, :], other=0)
        next_words_u = next_words
        if SWIGLU:
            next_words_u = tl.load(up_rows + first[None, :], mask=nmask[:, None] & (first < w_hi)[None, :], other=0)
        if GDC_MODE == 3:
            gdc_wait(USE_GDC)
        if PRMT:
            next_x0, next_x1, next_x2, next_x3 = _x_columns(X, first, w_hi)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_w = k0 // PER_WORD + tl.arange(0, WORDS)
        wkmask = offs_w < w_hi
        if PREFETCH:
            words = next_words
            words_u = next_words_u
            ahead = offs_w + WORDS
            amask = nmask[:, None] & (ahead < w_hi)[None, :]
            next_words = tl.load(gate_rows + ahead[None, :], mask=amask, other=0)
            if SWIGLU:
                next_words_u = tl.load(up_rows + ahead[None, :], mask=amask, other=0)
        else:
            mask = nmask[:, None] & wkmask[None, :]
            words = tl.load(gate_rows + offs_w[None, :], mask=mask, other=0)
            words_u = words
            if SWIGLU:
                words_u = tl.load(up_rows + offs_w[None, :], mask=mask, other=0)
        if WQ == 4:
            s, z = _group_params(S, Z, offs_n, nmask, offs_w, wkmask, k0, G, GROUP, BLOCK_K, PER_WORD)
            su, zu = _group_params(S, Z, N + offs_n, nmask, offs_w, wkmask, k0, G, GROUP, BLOCK_K, PER_WORD)
        else:  # int8: scaled after the sum
            s = 0.0
            z = 0.0
            su = 0.0
            zu = 0.0
        if PRMT:
            if PREFETCH:  # x's columns too: they come from L2 and would stall the multiply-adds
                x0, x1, x2, x3 = next_x0, next_x1, next_x2, next_x3
                next_x0, next_x1, next_x2, next_x3 = _x_columns(X, ahead, w_hi)
            else:
                x0, x1, x2, x3 = _x_columns(X, offs_w, w_hi)
            xsum += (x0 + x1) + (x2 + x3)
            v0, v1, v2, v3 = _int8_word_floats(words)
            acc += v0 * x0  # four multiply-adds per word
            acc += v1 * x1
            acc += v2 * x2
            acc += v3 * x3
            if SWIGLU:
                u0, u1, u2, u3 = _int8_word_floats(words_u)
                accu += u0 * x0
                accu += u1 * x1
                accu += u2 * x2
                accu += u3 * x3
        for j in tl.static_range(0 if PRMT else PER_WORD):
            cols = offs_w * PER_WORD + j
            if DOT:
                x = tl.load(X + offs_m[:, None] * sxm + cols[None, :], mask=mmask[:, None] & wkmask[None, :], other=0.0)
                acc = _accumulate(acc, x, _word_values(words, j, s, z, WQ, DT).to(DT), True, FP32)
                if SWIGLU:
                    accu = _accumulate(accu, x, _word_values(words_u, j, su, zu, WQ, DT).to(DT), True, FP32)
            else:
                x = tl.load(X + cols, mask=wkmask, other=0.0).to(tl.float32)[None, :]
                acc += _word_values(words, j, s, z, WQ, DT) * x
                if SWIGLU:
                    accu += _word_values(words_u, j, su, zu, WQ, DT) * x
    if GDC_MODE >= 2:
        gdc_trigger(USE_GDC)
    if not DOT:
        offset = 1152.0 * tl.sum(xsum) if PRMT else 0.0
        acc = tl.sum(acc, axis=1)[None, :] - offset
        accu = tl.sum(accu, axis=1)[None, :] - offset
    _finish(acc, accu, S, B, Y, P, offs_m, offs_n, mmask, nmask, N, sym, pid_k, SPLIT_K, WQ, HAS_BIAS, SWIGLU)


@triton.jit
def _gemv_reduce(P, S, B, Y, M, N, sym, BLOCK: tl.constexpr, SPLIT_K: tl.constexpr, WQ: tl.constexpr,
                 HAS_BIAS: tl.constexpr, SWIGLU: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    m = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    width = 2 * N if SWIGLU else N
    acc = tl.zeros([1, BLOCK], tl.float32)
    accu = tl.zeros([1, BLOCK], tl.float32)
    for s in range(SPLIT_K):  # a fixed order: results do not vary between runs
        row = P + (s * 16 + m) * width
        acc += tl.load(row + offs, mask=mask, other=0.0)[None, :]
        if SWIGLU:
            accu += tl.load(row + N + offs, mask=mask, other=0.0)[None, :]
    acc = _epilogue(acc, S, B, offs, mask, WQ, HAS_BIAS)
    if SWIGLU:
        acc = _swiglu(acc, _epilogue(accu, S, B, N + offs, mask, WQ, HAS_BIAS), Y.dtype.element_ty)
    tl.store(Y + m * sym + offs[None, :], acc.to(Y.dtype.element_ty), mask=mask[None, :])


# BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages[, dot]: a 5-tuple means dot=True
DEFAULT = (32, 256, 1, 4, 4)
DEFAULT_QUANT = (32, 256, 1, 4, 4, False)  # one row; more rows take the dot with this tiling
SHARED_BYTES = 220 * 1024  # about what the dot's pipelined operand tiles may take (an H100 SM has 227 KiB)


def _launch(x: torch.Tensor, w: torch.Tensor, n: int, k_w: int, wq: int, scales, zeros, group: int,
            bias: torch.Tensor | None, config, swiglu: bool) -> torch.Tensor:
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
    bn, bk, split, warps, stages, dot = (tuple(config) + (True,))[:6] if config else DEFAULT + (True,)
    per_word = 32 // wq if wq else 0
    dot = bool(dot) or m > 1  # multiply-adds for one row only
    prefetch = not dot and stages > 1  # one row of word tiles: a register prefetch of the next tile
    if interpreting():
        bn, bk, warps, stages = 64, 128, 4, 1  # few, large programs: the interpreter pays per program and op
    elif dot:  # pipeline stages that fit in shared memory (fp32 operands and swiglu's two weight tiles take more)
        size = 4 if dot_in_fp32(x.dtype) else 2
        while stages > 1 and stages * ((2 if swiglu else 1) * bn + 16) * bk * size > SHARED_BYTES:
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
    if PDL_MODE not in PDL_MODES:
        raise ValueError(f"WB_GEMV_PDL={PDL_MODE!r}: choose one of {', '.join(PDL_MODES)}")
    gdc_mode = PDL_MODES[PDL_MODE]
    if words:
        _gemv_words[grid](x2, w.view(torch.int32), s, z, b, y, part, m, n, k, groups, x2.stride(0), k // per_word,
                          y.stride(0), k_per, BLOCK_M=16 if dot else 1, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split,
                          HAS_BIAS=bias is not None, SWIGLU=swiglu, FP32=dot_in_fp32(x.dtype), WQ=wq,
                          GROUP=max(group, 1), PER_WORD=per_word, WORDS=bk // per_word, DOT=dot,
                          PRMT=PRMT and wq == INT8 and not dot and x.dtype in (torch.bfloat16, torch.float16)
                          and not interpreting(), PREFETCH=prefetch, GDC_MODE=gdc_mode, num_warps=warps,
                          num_stages=stages, **launch)
    else:
        _gemv[grid](x2, w, s, z, b, y, part, m, n, k, groups, x2.stride(0), w.stride(0), y.stride(0), k_per,
                    BLOCK_M=16 if dot else 1, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, HAS_BIAS=bias is not None,
                    SWIGLU=swiglu, FP32=dot_in_fp32(x.dtype), WQ=wq, GROUP=max(group, 1), DOT=dot,
                    GDC_MODE=gdc_mode, num_warps=warps, num_stages=stages, **launch)
    if split > 1:
        block = 1024 if not interpreting() else 64
        _gemv_reduce[(triton.cdiv(n, block), m)](part, s, b, y, m, n, y.stride(0), BLOCK=block, SPLIT_K=split, WQ=wq,
                                                 HAS_BIAS=bias is not None, SWIGLU=swiglu, num_warps=4, **gdc("gemv"))
    return y.view(*shape[:-1], n)


def _check_swiglu(w: torch.Tensor, swiglu: bool) -> None:
    if swiglu and w.shape[0] % 2:
        raise ValueError(f"gemv: swiglu needs gate and up rows, got an odd {w.shape[0]} rows")


def gemv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, config: tuple | None = None,
         swiglu: bool = False) -> torch.Tensor:
    """x [..., K] @ w[N, K]^T (+ bias) for at most 16 rows of x; swiglu: w is the gated MLP's gate_up [2I, K] and the
    result is silu(gate) * up [..., I], as activation.silu_and_mul of the unfused product."""
    if w.dim() != 2:
        raise ValueError(f"gemv: weights of shape {tuple(w.shape)} are not a matrix")
    _check_swiglu(w, swiglu)
    return _launch(x, w, w.shape[0], w.shape[1], FLOAT, None, None, 1, bias, config, swiglu)


def w8a16_gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
               config: tuple | None = None, swiglu: bool = False) -> torch.Tensor:
    """x [..., K] @ (int8 qweight [N, K] * per-channel scales [N])^T (+ bias), at most 16 rows; swiglu as gemv."""
    _check_swiglu(qweight, swiglu)
    return _launch(x, qweight, qweight.shape[0], qweight.shape[1], INT8, scales, None, 1, bias,
                   config or DEFAULT_QUANT, swiglu)


def w4a16_gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
               bias: torch.Tensor | None = None, config: tuple | None = None, swiglu: bool = False) -> torch.Tensor:
    """x [..., K] @ int4 weights (packed [N, K/2], per-group scales and zeros [N, G])^T (+ bias), at most 16 rows;
    swiglu as gemv."""
    _check_swiglu(qweight, swiglu)
    return _launch(x, qweight, qweight.shape[0], 2 * qweight.shape[1], INT4, scales, zeros, group_size, bias,
                   config or DEFAULT_QUANT, swiglu)


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
