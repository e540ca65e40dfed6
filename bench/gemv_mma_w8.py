"""An experiment: the one-row int8 weight-only GEMV on the tensor cores (Hopper), timed against the plugins' GEMV by
bench/gemv_mma_probe.py. Not used by the engines: on an H100 it was slower on every Llama shape but one (0.66-0.95x
the table's multiply-add kernels with bf16 operands; 0.68-1.02x with fp16 ones; bench/results/h100_notes.md, eighth
session), although it issues fewer instructions a weight byte.

The multiply-add kernels (plugins/gemv_tma.py) spend 4.5-5 instructions a weight byte: each int8 value is unpacked to
fp32 and multiplied by x's value in its own fused multiply-add. Here a weight tile comes by TMA (boxes 128 bytes wide,
swizzled), is read from shared memory straight into the layout of the mma's A operand, and each word of four values
becomes two bf16 pairs by five byte permutes and four subtractions (exact: 2^23 + q + 128 built under fp32's
exponent, less 2^23 + 128, whose upper halves are the bf16 values); the tensor cores take the products with x as the
B operand: 3.5 instructions a byte in the SASS of 128-row tiles (2.3 with fp16 operands: two values a permute).

K in pieces: the weights are viewed as [SPLIT * N, K / SPLIT] (a free reshape), so a small N still makes enough
tiles, and column c of the B operand holds x's piece c % SPLIT: row n's sum is that of its pieces' rows, each in its
own column. x's chunks are loaded a k-step ahead, in registers.

Values as the reference (runtime.quant_ops): the per-channel scale applied to the fp32 sum, then rounded to x's
dtype; swiglu's roundings as gemv_kernels._swiglu. The sums' order differs from the multiply-add kernels'.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

BOX = 128  # bytes (int8 values) of a TMA box's row: the widest a 128-byte swizzle takes


@gluon.jit
def _bf16_values(w):
    """int8 values (any layout whose threads hold four consecutive ones) as bf16, exactly, by byte permutes."""
    return gl.inline_asm_elementwise(
        asm="""{ .reg .b32 t, f0, f1, f2, f3;
        xor.b32 t, $2, 0x80808080;
        prmt.b32 f0, t, 0x4B000000, 0x7540; prmt.b32 f1, t, 0x4B000000, 0x7541;
        prmt.b32 f2, t, 0x4B000000, 0x7542; prmt.b32 f3, t, 0x4B000000, 0x7543;
        sub.f32 f0, f0, 0f4B000080; sub.f32 f1, f1, 0f4B000080;
        sub.f32 f2, f2, 0f4B000080; sub.f32 f3, f3, 0f4B000080;
        prmt.b32 $0, f0, f1, 0x7632; prmt.b32 $1, f2, f3, 0x7632; }""",
        constraints="=r,=r,r", args=[w], dtype=gl.bfloat16, is_pure=True, pack=4)


@gluon.jit
def _fp16_values(w):
    """int8 values as fp16, exactly, by byte permutes under fp16's exponent (two values an instruction)."""
    return gl.inline_asm_elementwise(
        asm="""{ .reg .b32 t, h0, h1, c;
        xor.b32 t, $2, 0x80808080; mov.b32 c, 0x64806480;
        prmt.b32 h0, t, 0x64646464, 0x4140; prmt.b32 h1, t, 0x64646464, 0x4342;
        sub.f16x2 $0, h0, c; sub.f16x2 $1, h1, c; }""",
        constraints="=r,=r,r", args=[w], dtype=gl.float16, is_pure=True, pack=4)


@gluon.jit
def _gdc(op: gl.constexpr):
    gl.inline_asm_elementwise(op + "; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _issue(desc, ring, bars, i, row0, up_row0, SWIGLU: gl.constexpr, SUB: gl.constexpr):
    """The TMA copies of k-step i's tiles (SUB boxes a tile; the up rows' too) into its ring slot."""
    STAGES: gl.constexpr = bars.type.shape[0]
    slot = i % STAGES
    parts: gl.constexpr = SUB * (2 if SWIGLU else 1)
    mbarrier.expect(bars.index(slot), parts * desc.block_type.nbytes)
    for j in gl.static_range(SUB):
        tma.async_copy_global_to_shared(desc, [row0, (i * SUB + j) * desc.block_type.shape[1]], bars.index(slot),
                                        ring.index(slot * parts + j))
        if SWIGLU:
            tma.async_copy_global_to_shared(desc, [up_row0, (i * SUB + j) * desc.block_type.shape[1]],
                                            bars.index(slot), ring.index(slot * parts + SUB + j))


@gluon.jit
def _gemv_mma_w8(desc, X, S, Y, N, K, BLOCK_N: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr,
                 SPLIT: gl.constexpr, SWIGLU: gl.constexpr, FP16: gl.constexpr, KW: gl.constexpr,
                 USE_GDC: gl.constexpr):
    """y [1, N] = (x [1, K] @ q^T) * s from the descriptor of q viewed as [SPLIT * (N or 2N), K / SPLIT] (row n * SPLIT
    + j: row n's j-th piece of K; boxes [BLOCK_N, 128]); a k-step takes SUB boxes. Column c of the mma's B operand
    holds x's piece c % SPLIT, so the sum of row n is that of its pieces' rows, each in its own column.
    SWIGLU: q holds the gate rows, then the up rows; y = silu(gate) * up."""
    W: gl.constexpr = desc.block_type.shape[1]
    warps: gl.constexpr = gl.num_warps()
    mma_l: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[warps, 1], instr_shape=[16, 8])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_l, k_width=KW)
    b_l: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma_l, k_width=KW)
    parts: gl.constexpr = SUB * (2 if SWIGLU else 1)
    ring = gl.allocate_shared_memory(gl.int8, [STAGES * parts, BLOCK_N, W], desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(bars.index(s), count=1)
    row0 = gl.program_id(0) * BLOCK_N
    piece = K // SPLIT
    steps = piece // (SUB * W)
    for i in gl.static_range(STAGES - 1):  # weights are never written by the kernel before: copy them before waiting
        if i < steps:
            _issue(desc, ring, bars, i, row0, N * SPLIT + row0, SWIGLU, SUB)
    if USE_GDC:
        _gdc("griddepcontrol.wait")
    # b_l as a blocked layout (the same registers, so converting is free), whose loads of x are vectors of KW
    x_l: gl.constexpr = gl.BlockedLayout([KW, 1], [4, 8], [1, warps], [0, 1])
    kx = gl.arange(0, W, layout=gl.SliceLayout(1, x_l))
    cx = gl.arange(0, 8, layout=gl.SliceLayout(0, x_l))
    xp = X + kx[:, None] + (cx[None, :] % SPLIT) * piece
    acc = gl.zeros([BLOCK_N, 8], gl.float32, mma_l)
    accu = gl.zeros([BLOCK_N, 8], gl.float32, mma_l)
    # x's chunks come a k-step ahead, in registers: a load waited for where it is used costs each k-step L2's latency
    xn0 = gl.load(xp)
    xn1 = gl.load(xp + W) if SUB == 2 else xn0
    for i in range(steps):
        x0 = gl.convert_layout(xn0, b_l)
        x1 = gl.convert_layout(xn1, b_l)
        ahead = gl.minimum(i + 1, steps - 1) * (SUB * W)
        xn0 = gl.load(xp + ahead)
        if SUB == 2:
            xn1 = gl.load(xp + ahead + W)
        gl.thread_barrier()  # every warp has read the slot the next copy overwrites (k-step i - 1's)
        if i + STAGES - 1 < steps:
            _issue(desc, ring, bars, i + STAGES - 1, row0, N * SPLIT + row0, SWIGLU, SUB)
        slot = i % STAGES
        mbarrier.wait(bars.index(slot), (i // STAGES) & 1)
        acc, accu = _products(ring, slot * parts, x0, a_l, acc, accu, SUB, SWIGLU, FP16)
        if SUB == 2:
            acc, accu = _products(ring, slot * parts + 1, x1, a_l, acc, accu, SUB, SWIGLU, FP16)
    if USE_GDC:
        _gdc("griddepcontrol.launch_dependents")
    OUT: gl.constexpr = BLOCK_N // SPLIT
    y_l: gl.constexpr = gl.BlockedLayout([1, SPLIT], [32, 1], [warps, 1], [1, 0])
    rows = row0 // SPLIT + gl.arange(0, OUT, layout=gl.SliceLayout(1, y_l))
    y = _row_sums(acc, SPLIT, y_l) * gl.load(S + rows)
    if SWIGLU:
        up = _row_sums(accu, SPLIT, y_l) * gl.load(S + N + rows)
        gate = y.to(gl.bfloat16).to(gl.float32)
        silu = (gate / (1.0 + gl.exp(-gate))).to(gl.bfloat16).to(gl.float32)
        y = silu * up.to(gl.bfloat16).to(gl.float32)
    gl.store(Y + rows, y.to(Y.dtype.element_ty))


@gluon.jit
def _products(ring, box, x, a_l: gl.constexpr, acc, accu, SUB: gl.constexpr, SWIGLU: gl.constexpr,
              FP16: gl.constexpr):
    """acc (and accu, the up rows') plus the ring's box (and the up rows' box SUB after it) times x's chunk."""
    if FP16:
        x = x.to(gl.float16)
        acc = mma_v2(_fp16_values(ring.index(box).load(a_l)), x, acc)
        if SWIGLU:
            accu = mma_v2(_fp16_values(ring.index(box + SUB).load(a_l)), x, accu)
    else:
        acc = mma_v2(_bf16_values(ring.index(box).load(a_l)), x, acc)
        if SWIGLU:
            accu = mma_v2(_bf16_values(ring.index(box + SUB).load(a_l)), x, accu)
    return acc, accu


@gluon.jit
def _row_sums(acc, SPLIT: gl.constexpr, y_l: gl.constexpr):
    """[BLOCK_N / SPLIT]: each output row's sum over its SPLIT pieces (piece j of a row: row j of its group, column
    j of the B operand)."""
    BLOCK_N: gl.constexpr = acc.type.shape[0]
    r = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, acc.type.layout))
    c = gl.arange(0, 8, layout=gl.SliceLayout(0, acc.type.layout))
    own = gl.sum(gl.where(c[None, :] == (r % SPLIT)[:, None], acc, 0.0), axis=1)
    return gl.sum(gl.convert_layout(gl.reshape(own, [BLOCK_N // SPLIT, SPLIT]), y_l), axis=1)


def fits(x: torch.Tensor, q: torch.Tensor, block_n: int, block_k: int, split: int, swiglu: bool) -> bool:
    """Whether the kernel takes this product: one 16-bit row (fp16 only to time fp16 operands), whole tiles of rows
    and of K's pieces, aligned."""
    n = q.shape[0] // (2 if swiglu else 1)
    return (x.dtype in (torch.bfloat16, torch.float16) and x.numel() == q.shape[1] and q.is_contiguous()
            and split in (1, 2, 4, 8) and (n * split) % block_n == 0 and block_n % split == 0
            and q.shape[1] % (split * block_k) == 0 and block_k in (BOX, 2 * BOX)
            and q.data_ptr() % 16 == 0 and x.data_ptr() % 16 == 0)


def w8a16_gemv_mma(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, config=(64, 256, 1, 4, 4),
                   swiglu: bool = False, use_gdc: bool = False, fp16: bool = False, k_width: int = 4) -> torch.Tensor:
    """x [1, K] (bf16) @ (int8 q [N, K] * scales [N])^T; config (BLOCK_N, BLOCK_K, SPLIT, warps, stages): tiles of
    BLOCK_N rows of q viewed as [SPLIT * N, K / SPLIT], BLOCK_K of each row a k-step."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    bn, bk, split, warps, stages = config[:5]
    if not fits(x, q, bn, bk, split, swiglu):
        raise ValueError(f"w8a16_gemv_mma: x {tuple(x.shape)} {x.dtype} and q {tuple(q.shape)} do not fit tiles "
                         f"[{bn}, {bk}] of K in {split} pieces (one bf16 row, whole tiles, contiguous, aligned)")
    n = q.shape[0] // (2 if swiglu else 1)
    k = q.shape[1]
    layout = gl.NVMMASharedLayout.get_default_for([bn, BOX], gl.int8)
    desc = TensorDescriptor.from_tensor(q.view(q.shape[0] * split, k // split), [bn, BOX], layout)
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    _gemv_mma_w8[(n * split // bn,)](desc, x, scales, y, n, k, BLOCK_N=bn, SUB=bk // BOX, STAGES=stages,
                                     SPLIT=split, SWIGLU=swiglu, FP16=fp16, KW=k_width, USE_GDC=use_gdc,
                                     num_warps=warps, **({"launch_pdl": True} if use_gdc else {}))
    return y
