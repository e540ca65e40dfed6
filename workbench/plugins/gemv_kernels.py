"""The GEMV kernels of plugins/gemv.py (which launches them and explains the formats).

Two ways to multiply a tile (`DOT`): the tensor cores (`tl.dot`, x padded to 16 rows), or, for one
row, fp32 multiply-adds into an accumulator tile reduced once at the end (no padding, no layout
change of the weight tile). `_gemv` reads float weights (and int8/int4 bytes where words do not
fit); `_gemv_words` reads quantized weights as int32 words and unpacks them with integer
operations (int8 -> float conversions are slow on the GPU, and whole words are what the loads
should move): value j of each word meets x's columns j, j + 4 (or 8), ..., so a dot takes one
tensor-core product per j. `_gemv_reduce` adds split-K partial sums in a fixed order.
"""

from __future__ import annotations

import triton
import triton.language as tl

from workbench.plugins.common import gdc_begin, gdc_trigger, gdc_wait, mma, rounded
from workbench.plugins.rms_norm import normed, rstd


@triton.jit
def _norm_prologue(X, R, H, K, eps, NORM: tl.constexpr, NORM_BLOCK: tl.constexpr):
    """NORM: 1 / rms of the row x + r (K values; rms_norm's arithmetic), that sum written to H by program (0, 0);
    else 1.0 (unused)."""
    if NORM:
        offs = tl.arange(0, NORM_BLOCK)
        mask = offs < K
        DT = X.dtype.element_ty
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        h = rounded(x + tl.load(R + offs, mask=mask, other=0.0).to(tl.float32), DT)
        first = (tl.program_id(0) == 0) & (tl.program_id(1) == 0)
        tl.store(H + offs, h.to(DT), mask=mask & first)
        return rstd(h, K, eps)
    else:
        return 1.0


@triton.jit
def _xin(X, R, G, offs, mask, inv, NORM: tl.constexpr):
    """x's values at offs (x's dtype): as stored, or (NORM) rms_norm(x + r) there, inv being the row's 1 / rms."""
    x = tl.load(X + offs, mask=mask, other=0.0)
    if NORM:
        DT = X.dtype.element_ty
        h = rounded(x.to(tl.float32) + tl.load(R + offs, mask=mask, other=0.0).to(tl.float32), DT)
        x = normed(h, tl.load(G + offs, mask=mask, other=0.0), inv, DT, DT).to(DT)
    return x


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
def _program(M, N, K, k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LANES: tl.constexpr,
             DOT: tl.constexpr):
    """This program's split, output columns and rows (with masks), zero sums (gate's and up's) and K range: sums of
    [BLOCK_M, BLOCK_N] for a dot, else [BLOCK_N, LANES] of multiply-adds reduced at the end."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    if DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        accu = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, LANES], tl.float32)
        accu = tl.zeros([BLOCK_N, LANES], tl.float32)
    k_lo = pid_k * k_per_split
    return pid_k, offs_n, offs_m, offs_n < N, offs_m < M, acc, accu, k_lo, tl.minimum(K, k_lo + k_per_split)


@triton.jit
def _gemv(X, W, S, Z, B, Y, P, M, N, K, G, sxm, swn, sym, k_per_split, R, NW, H, eps, BLOCK_M: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
          SWIGLU: tl.constexpr, FP32: tl.constexpr, WQ: tl.constexpr, GROUP: tl.constexpr, DOT: tl.constexpr,
          NORM: tl.constexpr, NORM_BLOCK: tl.constexpr, GDC_MODE: tl.constexpr, USE_GDC: tl.constexpr):
    """GDC_MODE: see gemv.PDL_MODES (float tiles take no register prefetch: it slowed the 8B bf16 step by 12% on an
    H100, so `prefetch` acts as `late` here). NORM: x is rms_norm(x + r) with weights NW (one row; see gemv.py)."""
    if GDC_MODE == 1:
        gdc_begin(USE_GDC)
    else:
        gdc_wait(USE_GDC)
    inv = _norm_prologue(X, R, H, K, eps, NORM, NORM_BLOCK)
    DT = X.dtype.element_ty
    pid_k, offs_n, offs_m, nmask, mmask, acc, accu, k_lo, k_hi = _program(M, N, K, k_per_split, BLOCK_M, BLOCK_N,
                                                                          BLOCK_K, DOT)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < k_hi
        x = _xin(X, R, NW, offs_m[:, None] * sxm + offs_k[None, :], mmask[:, None] & kmask[None, :], inv, NORM)
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
def _permuted_fma(acc, accu, words, words_u, x0, x1, x2, x3, SWIGLU: tl.constexpr):
    """acc (and accu, of the up rows' words when SWIGLU) plus the int8 words, unpacked by _int8_word_floats, times
    x's four columns: four multiply-adds a word."""
    v0, v1, v2, v3 = _int8_word_floats(words)
    acc += v0 * x0
    acc += v1 * x1
    acc += v2 * x2
    acc += v3 * x3
    if SWIGLU:
        u0, u1, u2, u3 = _int8_word_floats(words_u)
        accu += u0 * x0
        accu += u1 * x1
        accu += u2 * x2
        accu += u3 * x3
    return acc, accu


@triton.jit
def _x_columns(X, R, NW, offs_w, w_hi, inv, NORM: tl.constexpr):
    """x's columns 4w, 4w + 1, 4w + 2, 4w + 3 of the words w in fp32 (rows of 1), zero past w_hi (NORM: _xin's)."""
    mask = offs_w < w_hi
    x0 = _xin(X, R, NW, offs_w * 4, mask, inv, NORM).to(tl.float32)[None, :]
    x1 = _xin(X, R, NW, offs_w * 4 + 1, mask, inv, NORM).to(tl.float32)[None, :]
    x2 = _xin(X, R, NW, offs_w * 4 + 2, mask, inv, NORM).to(tl.float32)[None, :]
    x3 = _xin(X, R, NW, offs_w * 4 + 3, mask, inv, NORM).to(tl.float32)[None, :]
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
def _gemv_words(X, Wd, S, Z, B, Y, P, M, N, K, G, sxm, swn, sym, k_per_split, R, NW, H, eps, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
                SWIGLU: tl.constexpr, FP32: tl.constexpr, WQ: tl.constexpr, GROUP: tl.constexpr,
                PER_WORD: tl.constexpr, WORDS: tl.constexpr, DOT: tl.constexpr, PRMT: tl.constexpr,
                PREFETCH: tl.constexpr, NORM: tl.constexpr, NORM_BLOCK: tl.constexpr, GDC_MODE: tl.constexpr,
                USE_GDC: tl.constexpr):
    """x times quantized weights read as int32 words (PER_WORD values each): value j of every word is taken at
    once, against x's columns j, j + PER_WORD, ...; for one row by fp32 multiply-adds, for more (DOT) by one
    tensor-core dot per j of the dequantized values (exact for int8, rounded to x's dtype for int4).

    PRMT (int8, one row of 16-bit x): the multiply-adds take q + 1152 from _int8_word_floats, and 1152 * sum(x)
    comes off the sums at the end. Each product is exact in fp32 (11 by 8 or 11 significant bits), so only the
    accumulation rounds, on sums about 1152 / |q| larger: still near fp32 precision, far below x's.

    PREFETCH: the next tile's words are loaded into registers before the current tile is multiplied, so a
    program keeps a load in flight while it computes (Triton pipelines only the loads that feed a dot).

    NORM: x is rms_norm(x + r) with weights NW (one row; see gemv.py)."""
    if GDC_MODE == 1:
        gdc_begin(USE_GDC)
    elif GDC_MODE == 2 or not PREFETCH:
        gdc_wait(USE_GDC)
    if GDC_MODE == 1 or GDC_MODE == 2 or not PREFETCH:
        inv = _norm_prologue(X, R, H, K, eps, NORM, NORM_BLOCK)
    DT = X.dtype.element_ty
    pid_k, offs_n, offs_m, nmask, mmask, acc, accu, k_lo, k_hi = _program(M, N, K, k_per_split, BLOCK_M, BLOCK_N,
                                                                          WORDS, DOT)
    xsum = tl.zeros([1, WORDS], tl.float32)
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
            inv = _norm_prologue(X, R, H, K, eps, NORM, NORM_BLOCK)
        if PRMT:
            next_x0, next_x1, next_x2, next_x3 = _x_columns(X, R, NW, first, w_hi, inv, NORM)
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
                next_x0, next_x1, next_x2, next_x3 = _x_columns(X, R, NW, ahead, w_hi, inv, NORM)
            else:
                x0, x1, x2, x3 = _x_columns(X, R, NW, offs_w, w_hi, inv, NORM)
            xsum += (x0 + x1) + (x2 + x3)
            acc, accu = _permuted_fma(acc, accu, words, words_u, x0, x1, x2, x3, SWIGLU)
        for j in tl.static_range(0 if PRMT else PER_WORD):
            cols = offs_w * PER_WORD + j
            if DOT:
                x = _xin(X, R, NW, offs_m[:, None] * sxm + cols[None, :], mmask[:, None] & wkmask[None, :], inv, NORM)
                acc = _accumulate(acc, x, _word_values(words, j, s, z, WQ, DT).to(DT), True, FP32)
                if SWIGLU:
                    accu = _accumulate(accu, x, _word_values(words_u, j, su, zu, WQ, DT).to(DT), True, FP32)
            else:
                x = _xin(X, R, NW, cols, wkmask, inv, NORM).to(tl.float32)[None, :]
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
