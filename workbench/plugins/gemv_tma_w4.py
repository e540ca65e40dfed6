"""The int4 GEMV from TMA-pipelined tiles, for up to 16 rows (plugins/gemv.py launches it for int4 configs of kind
"tma", or "tma_dot": several rows on the tensor cores).

The register-tile int4 kernel (gemv_kernels._gemv_words) spends about 30 instructions a weight byte: each of a
word's eight x columns is loaded on its own and converted through shared memory, and every value is rounded to
x's dtype by integer operations. Here the weight words and x's chunk come by TMA copies (x viewed as [K / 64, 64]
and split into the eight columns in registers, as the int8 TMA tiles split four), and a pair of values is rounded
by one `cvt.rn.bf16x2.f32` where x is bf16 on the GPU.

A tile spans BLOCK_K = group size or less, so one scale and one zero a row serve it; they are loaded an iteration
ahead. Each value is dequantized as the reference does: (q - zero) * scale in fp32 (q - zero exact: on the GPU q
comes as 128 + q from a nibble masked under bf16's exponent, two at a time, less 128 + zero), rounded to x's dtype
(nearest, ties to even); the products are summed in fp32, in another order than the register kernel's.
"""

from __future__ import annotations

import triton
import triton.language as tl

from workbench.plugins.common import gdc_begin, gdc_trigger, gdc_wait, gdc_wait_zero, mma, rounded
from workbench.plugins.gemv_kernels import _finish, _program


@triton.jit
def _bf16_pair(a, b):
    """a and b (fp32) rounded to bf16 (nearest, ties to even) and widened back, by one packed conversion."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .b32 t;
        cvt.rn.bf16x2.f32 t, $3, $2;
        shl.b32 $0, t, 16;
        and.b32 $1, t, 0xFFFF0000;
        }
        """,
        constraints="=r,=r,r,r", args=[a, b], dtype=(tl.float32, tl.float32), is_pure=True, pack=1)


@triton.jit
def _int4_word_magic(words):
    """The eight int4 values q of every int32 word (low nibble first) as the fp32 numbers 128 + q, exactly: each
    pair of nibbles j, j + 4 masked under bf16's exponent of 128 by one lop3 (after a shift), then widened (fifteen
    instructions a word, against about four a value by shifts, bit-field extracts and masks)."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .b32 t0, t1, t2, t3, u1, u2, u3;
        lop3.b32 t0, $8, 0x000F000F, 0x43004300, 0xEA;
        shr.b32 u1, $8, 4;
        lop3.b32 t1, u1, 0x000F000F, 0x43004300, 0xEA;
        shr.b32 u2, $8, 8;
        lop3.b32 t2, u2, 0x000F000F, 0x43004300, 0xEA;
        shr.b32 u3, $8, 12;
        lop3.b32 t3, u3, 0x000F000F, 0x43004300, 0xEA;
        shl.b32 $0, t0, 16;
        shl.b32 $1, t1, 16;
        shl.b32 $2, t2, 16;
        shl.b32 $3, t3, 16;
        and.b32 $4, t0, 0xFFFF0000;
        and.b32 $5, t1, 0xFFFF0000;
        and.b32 $6, t2, 0xFFFF0000;
        and.b32 $7, t3, 0xFFFF0000;
        }
        """,
        constraints="=r,=r,=r,=r,=r,=r,=r,=r,r", args=[words], dtype=(tl.float32,) * 8, is_pure=True, pack=1)


@triton.jit
def _rounded_pair(va, vb, DT: tl.constexpr, RN_ASM: tl.constexpr):
    """Two fp32 values rounded to DT (kept in fp32) as the reference rounds them."""
    if RN_ASM:
        return _bf16_pair(va, vb)
    else:
        return rounded(va, DT), rounded(vb, DT)


@triton.jit
def _w4_pair_fma(acc, va, vb, xa, xb, DT: tl.constexpr, RN_ASM: tl.constexpr):
    """acc plus two dequantized values [BLOCK_N, WORDS] (fp32, rounded here to DT) times x's columns xa and xb ([1,
    WORDS] for one row, acc [BLOCK_N, WORDS]; [BLOCK_M, 1, WORDS] for several, acc [BLOCK_M, BLOCK_N, WORDS])."""
    va, vb = _rounded_pair(va, vb, DT, RN_ASM)
    if len(acc.shape) == 3:
        va = va[None, :, :]
        vb = vb[None, :, :]
    acc += va * xa
    acc += vb * xb
    return acc


@triton.jit
def _w4_dequant(words, z, s, ASM: tl.constexpr):
    """The words' eight values (q - z) * s in fp32, not yet rounded, j = 0..7 (low nibble first); z, s per row. q - z
    is exact: q under a float's exponent less that float plus z."""
    if ASM:
        m0, m1, m2, m3, m4, m5, m6, m7 = _int4_word_magic(words)
        zc = 128.0 + z
    else:
        m0 = (((words >> 0) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        m1 = (((words >> 4) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        m2 = (((words >> 8) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        m3 = (((words >> 12) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        m4 = (((words >> 16) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        m5 = (((words >> 20) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        m6 = (((words >> 24) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        m7 = (((words >> 28) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)
        zc = 8388608.0 + z
    return ((m0 - zc) * s, (m1 - zc) * s, (m2 - zc) * s, (m3 - zc) * s, (m4 - zc) * s, (m5 - zc) * s,
            (m6 - zc) * s, (m7 - zc) * s)


@triton.jit
def _w4_fma(acc, words, z, s, x0, x1, x2, x3, x4, x5, x6, x7, DT: tl.constexpr, ASM: tl.constexpr,
            RN_ASM: tl.constexpr):
    """acc plus the words' eight values, each rounded to DT as the reference rounds, times x's columns x0 .. x7 by
    multiply-adds."""
    v0, v1, v2, v3, v4, v5, v6, v7 = _w4_dequant(words, z, s, ASM)
    acc = _w4_pair_fma(acc, v0, v4, x0, x4, DT, RN_ASM)
    acc = _w4_pair_fma(acc, v1, v5, x1, x5, DT, RN_ASM)
    acc = _w4_pair_fma(acc, v2, v6, x2, x6, DT, RN_ASM)
    acc = _w4_pair_fma(acc, v3, v7, x3, x7, DT, RN_ASM)
    return acc


@triton.jit
def _w4_dot(acc, words, z, s, x0, x1, x2, x3, x4, x5, x6, x7, DT: tl.constexpr, ASM: tl.constexpr,
            RN_ASM: tl.constexpr, FP32: tl.constexpr):
    """acc [BLOCK_M, BLOCK_N] plus x's columns x0 .. x7 ([BLOCK_M, WORDS] in DT) times the words' eight values, each
    rounded to DT as the reference rounds: one tensor-core product a column (exact products, fp32 sums)."""
    v0, v1, v2, v3, v4, v5, v6, v7 = _w4_dequant(words, z, s, ASM)
    v0, v4 = _rounded_pair(v0, v4, DT, RN_ASM)
    v1, v5 = _rounded_pair(v1, v5, DT, RN_ASM)
    v2, v6 = _rounded_pair(v2, v6, DT, RN_ASM)
    v3, v7 = _rounded_pair(v3, v7, DT, RN_ASM)
    acc += mma(x0, tl.trans(v0.to(DT)), FP32)
    acc += mma(x1, tl.trans(v1.to(DT)), FP32)
    acc += mma(x2, tl.trans(v2.to(DT)), FP32)
    acc += mma(x3, tl.trans(v3.to(DT)), FP32)
    acc += mma(x4, tl.trans(v4.to(DT)), FP32)
    acc += mma(x5, tl.trans(v5.to(DT)), FP32)
    acc += mma(x6, tl.trans(v6.to(DT)), FP32)
    acc += mma(x7, tl.trans(v7.to(DT)), FP32)
    return acc


@triton.jit
def _group_row(S, Z, rows, rmask, g, G):
    """The scale and the zero (fp32) of group g of each row, as [rows, 1] columns."""
    s = tl.load(S + rows * G + g, mask=rmask, other=0.0)[:, None]
    z = tl.load(Z + rows * G + g, mask=rmask, other=0).to(tl.float32)[:, None]
    return s, z


@triton.jit
def _x_columns8(Xd, k0, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, WORDS: tl.constexpr, DOT: tl.constexpr):
    """x's columns 8w + j (j = 0..7) of the tile's words: [1, WORDS] each for one row (Xd: x viewed as [K / 64, 64]),
    [BLOCK_M, 1, WORDS] for several (Xd: x [M, K]), in fp32; DOT: [BLOCK_M, WORDS] in x's dtype. Zeros past K and
    M."""
    if BLOCK_M == 1:
        xt = tl.reshape(Xd.load([k0 // 64, 0]).to(tl.float32), [WORDS, 2, 2, 2])  # [BLOCK_K / 64, 64]
    elif DOT:
        xt = tl.reshape(Xd.load([0, k0]), [BLOCK_M, WORDS, 2, 2, 2])  # [BLOCK_M, BLOCK_K]
    else:
        xt = tl.reshape(Xd.load([0, k0]).to(tl.float32), [BLOCK_M, WORDS, 2, 2, 2])
    lo, hi = tl.split(xt)  # column 8w + 4a + 2b + c: c = 0, 1
    lo0, lo1 = tl.split(lo)  # b = 0, 1
    hi0, hi1 = tl.split(hi)
    x0, x4 = tl.split(lo0)  # a = 0, 1
    x2, x6 = tl.split(lo1)
    x1, x5 = tl.split(hi0)
    x3, x7 = tl.split(hi1)
    if BLOCK_M == 1:
        return x0[None, :], x1[None, :], x2[None, :], x3[None, :], x4[None, :], x5[None, :], x6[None, :], x7[None, :]
    elif DOT:
        return x0, x1, x2, x3, x4, x5, x6, x7
    else:
        return (x0[:, None, :], x1[:, None, :], x2[:, None, :], x3[:, None, :], x4[:, None, :], x5[:, None, :],
                x6[:, None, :], x7[:, None, :])


@triton.jit
def _gemv_tma_w4(X, Xd, Wd, S, Z, B, Y, P, M, N, K, G, sym, k_per_split, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
                 SWIGLU: tl.constexpr, GROUP: tl.constexpr, WORDS: tl.constexpr, ASM: tl.constexpr,
                 RN_ASM: tl.constexpr, DOT: tl.constexpr, FP32: tl.constexpr, STAGES: tl.constexpr,
                 GDC_MODE: tl.constexpr, USE_GDC: tl.constexpr):
    """y [M, N] = x [M, K] @ W^T from the descriptor Wd of the packed int4 words [N or 2N, K / 8] (tiles [BLOCK_N,
    WORDS]) and Xd of x (X): viewed as [K / 64, 64] for one row, else [M, K] in tiles [BLOCK_M, BLOCK_K]; scales S
    [N or 2N, G] (fp32) and zeros Z (uint8). Several rows share each dequantized value: multiply-adds into sums
    [BLOCK_M, BLOCK_N, WORDS], or (DOT) on the tensor cores, one product a column of the words (FP32: fp32 x,
    products in full precision). GDC_MODE as gemv.PDL_MODES (`prefetch`: the wait inside the first iteration, x's
    reads after it by data dependence; x's copies share the weights' barriers, so in practice it precedes them)."""
    if GDC_MODE == 1:
        gdc_begin(USE_GDC)
    elif GDC_MODE == 2:
        gdc_wait(USE_GDC)
    DT = X.dtype.element_ty
    pid_k, offs_n, offs_m, nmask, mmask, acc, accu, k_lo, k_hi = _program(M, N, K, k_per_split, BLOCK_M, BLOCK_N,
                                                                          WORDS, False)
    if DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        accu = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    elif BLOCK_M > 1:
        acc = tl.zeros([BLOCK_M, BLOCK_N, WORDS], tl.float32)
        accu = tl.zeros([BLOCK_M, BLOCK_N, WORDS], tl.float32)
    row0 = tl.program_id(0) * BLOCK_N
    s, z = _group_row(S, Z, offs_n, nmask, k_lo // GROUP, G)
    su, zu = s, z
    if SWIGLU:  # the up rows' parameters, N rows below the gate rows' (S and Z have 2N rows only then)
        su, zu = _group_row(S, Z, N + offs_n, nmask, k_lo // GROUP, G)
    dep = tl.full([], 0, tl.int32)  # `prefetch`: 0 from the wait, in every offset of x (gdc_wait_zero says why)
    for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=STAGES):
        # the next tile's group parameters, loaded a tile ahead (these loads are not pipelined with the copies)
        g_next = tl.minimum(k0 + BLOCK_K, K - 1) // GROUP
        s_next, z_next = _group_row(S, Z, offs_n, nmask, g_next, G)
        w = Wd.load([row0, k0 // 8])
        if GDC_MODE == 3:  # after the weights' copy: the pipeline's first ones then precede it
            if k0 == k_lo:
                dep = gdc_wait_zero(USE_GDC)
        x0, x1, x2, x3, x4, x5, x6, x7 = _x_columns8(Xd, k0 + dep, BLOCK_M, BLOCK_K, WORDS, DOT)
        if DOT:
            acc = _w4_dot(acc, w, z, s, x0, x1, x2, x3, x4, x5, x6, x7, DT, ASM, RN_ASM, FP32)
        else:
            acc = _w4_fma(acc, w, z, s, x0, x1, x2, x3, x4, x5, x6, x7, DT, ASM, RN_ASM)
        if SWIGLU:  # the up rows, N below the gate rows
            su_next, zu_next = _group_row(S, Z, N + offs_n, nmask, g_next, G)
            wu = Wd.load([N + row0, k0 // 8])
            if DOT:
                accu = _w4_dot(accu, wu, zu, su, x0, x1, x2, x3, x4, x5, x6, x7, DT, ASM, RN_ASM, FP32)
            else:
                accu = _w4_fma(accu, wu, zu, su, x0, x1, x2, x3, x4, x5, x6, x7, DT, ASM, RN_ASM)
            su, zu = su_next, zu_next
        s, z = s_next, z_next
    if GDC_MODE >= 2:
        gdc_trigger(USE_GDC)
    if BLOCK_M == 1:
        acc = tl.sum(acc, axis=1)[None, :]
        accu = tl.sum(accu, axis=1)[None, :]
    elif not DOT:
        acc = tl.sum(acc, axis=2)
        accu = tl.sum(accu, axis=2)
    _finish(acc, accu, S, B, Y, P, offs_m, offs_n, mmask, nmask, N, sym, pid_k, SPLIT_K, 4, HAS_BIAS, SWIGLU)
