"""The one-row GEMV with its weight tiles brought in by the Hopper tensor memory accelerator (plugins/gemv.py
launches it for configs whose kind is "tma" or "tma_prmt").

The register-tile kernels (gemv_kernels.py) keep one tile a program in flight: a warp issues its loads, then
waits for them before it multiplies. Here each tile is one TMA copy into shared memory, and the loop is
software-pipelined over STAGES buffers, so a program has STAGES - 1 tiles on their way while it multiplies
one, without registers to hold them; rows and columns past the weights' edge arrive as zeros.

Float weights are multiplied as stored; int8 weights are read as int32 words and unpacked into their exact
values (byte permutes for 16-bit x, integer shifts otherwise): the same products as the word-tile kernel's,
summed in an order that may differ where the tiles' register layouts differ.
"""

from __future__ import annotations

import triton
import triton.language as tl

from workbench.plugins.common import gdc_begin, gdc_trigger, gdc_wait, gdc_wait_zero
from workbench.plugins.gemv_kernels import (_finish, _norm_prologue, _permuted_fma, _program, _word_values, _x_columns,
                                            _xin)


@triton.jit
def _int8_word_magic(words):
    """The four int8 values q of every int32 word as the fp32 numbers 2^23 + q + 128, exactly: the sign bits
    flipped once a word, then each byte permuted under the exponent of 2^23 (five instructions a word, against
    four shifts and masks a byte by integer operations)."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .b32 t;
        xor.b32 t, $4, 0x80808080;
        prmt.b32 $0, t, 0x4B000000, 0x7540;
        prmt.b32 $1, t, 0x4B000000, 0x7541;
        prmt.b32 $2, t, 0x4B000000, 0x7542;
        prmt.b32 $3, t, 0x4B000000, 0x7543;
        }
        """,
        constraints="=r,=r,=r,=r,r", args=[words], dtype=(tl.float32, tl.float32, tl.float32, tl.float32),
        is_pure=True, pack=1)


@triton.jit
def _word_fma(acc, words, x0, x1, x2, x3, WQ: tl.constexpr, DT: tl.constexpr, PRMT: tl.constexpr):
    """acc plus the int8 words' values j = 0..3 (exact) times x's columns xj; PRMT: unpacked by byte permutes
    (the same values as _word_values' integer operations, so the same sums)."""
    if PRMT:
        m0, m1, m2, m3 = _int8_word_magic(words)
        acc += (m0 - 8388736.0) * x0
        acc += (m1 - 8388736.0) * x1
        acc += (m2 - 8388736.0) * x2
        acc += (m3 - 8388736.0) * x3
    else:
        acc += _word_values(words, 0, 0.0, 0.0, WQ, DT) * x0
        acc += _word_values(words, 1, 0.0, 0.0, WQ, DT) * x1
        acc += _word_values(words, 2, 0.0, 0.0, WQ, DT) * x2
        acc += _word_values(words, 3, 0.0, 0.0, WQ, DT) * x3
    return acc


@triton.jit
def _gemv_tma(X, Xd, Wd, S, B, Y, P, N, K, sym, k_per_split, R, NW, H, eps, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, SWIGLU: tl.constexpr,
              WQ: tl.constexpr, PER_WORD: tl.constexpr, WORDS: tl.constexpr, PRMT: tl.constexpr, X_TMA: tl.constexpr,
              STAGES: tl.constexpr, NORM: tl.constexpr, NORM_BLOCK: tl.constexpr, GDC_MODE: tl.constexpr,
              USE_GDC: tl.constexpr):
    """y [1, N] = x [1, K] @ W^T from the descriptor Wd of W [N or 2N, K / PER_WORD] (int32 words when WQ == 8);
    tiles [BLOCK_N, WORDS]. GDC_MODE as gemv.PDL_MODES; `prefetch` waits for the kernel before inside the first
    iteration, after the pipeline's first weight tiles are requested (weights are never written by it; x's copies
    share their barriers, so x by TMA waits before any), and computes NORM's prologue there; every read of x comes
    after the wait by data dependence. NORM: x is rms_norm(x + r) with weights NW (see gemv.py).

    X_TMA (int8): x's chunk comes by TMA too, from the descriptor Xd of x viewed as [K / 64, 64], and its four
    columns are split from it in registers: loaded on their own, each would be converted to the layout of the
    multiply-adds through shared memory, two barriers a column (SASS counted on the CPU: 9 barriers an iteration
    -> 4). The words are unpacked exactly (q, as the reference): with PRMT by byte permutes under 2^23's exponent
    (_int8_word_magic), else by integer operations; the same values, so the same bits. (The register kernels'
    permutes under fp16's exponent, with 1152 * sum(x) taken off at the end, measured up to 3 bf16 ulps off with
    these columns.)"""
    if GDC_MODE == 1:
        gdc_begin(USE_GDC)
    elif GDC_MODE == 2:
        gdc_wait(USE_GDC)
    inv = 1.0
    if GDC_MODE != 3:
        inv = _norm_prologue(X, R, H, K, eps, NORM, NORM_BLOCK)
    DT = X.dtype.element_ty
    pid_k, offs_n, offs_m, nmask, mmask, acc, accu, k_lo, k_hi = _program(1, N, K, k_per_split, 1, BLOCK_N,
                                                                          WORDS, False)
    row0 = tl.program_id(0) * BLOCK_N
    xsum = tl.zeros([1, WORDS], tl.float32)
    dep = tl.full([], 0, tl.int32)  # `prefetch`: 0 from the wait, in every offset of x (gdc_wait_zero says why)
    for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=STAGES):
        w = Wd.load([row0, k0 // PER_WORD])
        wu = w
        if SWIGLU:  # the up rows, N below the gate rows
            wu = Wd.load([N + row0, k0 // PER_WORD])
        if GDC_MODE == 3:  # after the weights' copies: the pipeline's first ones then precede it
            if k0 == k_lo:
                dep = gdc_wait_zero(USE_GDC)
                inv = _norm_prologue(X, R, H, K, eps, NORM, NORM_BLOCK)
        kx = k0 + dep
        if WQ == 0:
            offs_k = kx + tl.arange(0, BLOCK_K)
            x = _xin(X, R, NW, offs_k, offs_k < k_hi, inv, NORM).to(tl.float32)[None, :]
            acc += w.to(tl.float32) * x
            if SWIGLU:
                accu += wu.to(tl.float32) * x
        elif X_TMA:
            xt = Xd.load([kx // 64, 0]).to(tl.float32)  # [BLOCK_K / 64, 64]: zeros past K
            even, odd = tl.split(tl.reshape(xt, [WORDS, 2, 2]))  # columns 4w, 4w + 2 and 4w + 1, 4w + 3
            x0, x2 = tl.split(even)
            x1, x3 = tl.split(odd)
            acc = _word_fma(acc, w, x0[None, :], x1[None, :], x2[None, :], x3[None, :], WQ, DT, PRMT)
            if SWIGLU:
                accu = _word_fma(accu, wu, x0[None, :], x1[None, :], x2[None, :], x3[None, :], WQ, DT, PRMT)
        elif PRMT:
            offs_w = kx // PER_WORD + tl.arange(0, WORDS)
            x0, x1, x2, x3 = _x_columns(X, R, NW, offs_w, k_hi // PER_WORD, inv, NORM)
            xsum += (x0 + x1) + (x2 + x3)
            acc, accu = _permuted_fma(acc, accu, w, wu, x0, x1, x2, x3, SWIGLU)
        else:
            offs_w = kx // PER_WORD + tl.arange(0, WORDS)
            wkmask = offs_w < k_hi // PER_WORD
            for j in tl.static_range(PER_WORD):
                x = _xin(X, R, NW, offs_w * PER_WORD + j, wkmask, inv, NORM).to(tl.float32)[None, :]
                acc += _word_values(w, j, 0.0, 0.0, WQ, DT) * x
                if SWIGLU:
                    accu += _word_values(wu, j, 0.0, 0.0, WQ, DT) * x
    if GDC_MODE >= 2:
        gdc_trigger(USE_GDC)
    offset = 1152.0 * tl.sum(xsum) if PRMT else 0.0
    acc = tl.sum(acc, axis=1)[None, :] - offset
    accu = tl.sum(accu, axis=1)[None, :] - offset
    _finish(acc, accu, S, B, Y, P, offs_m, offs_n, mmask, nmask, N, sym, pid_k, SPLIT_K, WQ, HAS_BIAS, SWIGLU)
