"""One decoder layer's projections after attention, and the next layer's first, as one persistent kernel for a
decode step of one row (Hopper):

    o = x @ Wo^T;  h1 = r + o;  act = swiglu(norm(h1, g2) @ Wgu^T);  d = act @ Wd^T;  h2 = h1 + d;
    y = norm(h2, gn) @ Wn^T        (Wn: the next layer's qkv, or the logits layer after the final norm)

with the roundings of the unfused plugins (gemv.py's products and activation, rms_norm.py's add + norm).

Why one kernel: between two GEMV launches the memory idles about 1.6 us while one kernel ends and the next reads its
input. Here a producer warp a program copies every weight tile of the program's four stages into a ring of shared
memory by TMA as soon as a slot frees, and never waits for a stage's input; four consumer warps wait at each stage
for every program's part of the stage before (a device-wide counter), take the input into shared memory (with the
add + norm where the stage has one) and multiply the tiles as they land. While they wait, the next stage's weights
keep coming. bench/ws_chain_probe.py measured the design on an H100 (bench/results/h100_notes.md, seventh session).
What a stage boundary waits for is kept short: the scales of a tile are loaded before its sums, a norm's residual and
weights before the wait (neither depends on the stage before), and a stage input reads only the rows of x it has.

Weights: bf16, or int8 per output channel (w8a16, the words' four values unpacked exactly, scaled after the sum;
each consumer thread splits its words' four values of x in registers), in tiles of ROWS rows: 8 for bf16, 16 for
int8 (its consumers need the rows to reuse x). One program an SM, all resident (the counters need it), each with
a ring of 64-128 KiB (by shape: runtime/layer_block.py's table) and x's buffer (up to 32 KiB) in shared memory, and
registers (MAXNREG) that leave room for a program of the decode attention beside it. Paired slots (`paired`,
bf16 in the engines' table) halve the waits and releases a byte; a slot goes back with no proxy fence (FENCE).

The engines run it through runtime/layer_block.py (cuda_program's `layer_block` fusion) where it measured faster;
`decode_block_ref` is its torch reference.
"""

from __future__ import annotations

import os

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

RING_KIB = 128  # the ring of weight tiles a program, unless the caller gives its own (runtime/layer_block.py's table)
# a probe's switch (bench/run_gpu.sh ring): WB_BLOCK_RING_KIB sets every block's ring, over the caller's
RING_OVERRIDE = int(os.environ.get("WB_BLOCK_RING_KIB", "0"))
# Consumer warps a program (WB_BLOCK_WARPS, a probe's switch); the producer's warp comes on top, in a warp group of
# its own. 8 measured slower (tenth session, call 2: 1B bf16 1010 -> 1003 tok/s).
WARPS = int(os.environ.get("WB_BLOCK_WARPS", "4"))
# Registers a thread at launch (ptx .maxnreg; the partitions then share them out by setmaxnreg, the consumers still
# getting 240-256). Triton's default for 4 consumer warps is 256 for the 8 warps, an SM's whole register file: nothing
# fits beside a program, so the decode attention after it (136 x 128 registers) waited for it to end before its
# programs started, and the next block for attention's end. With these, a program of attention fits beside a block's.
# Tenth session, call 1 (H100, batch 1): 1B bf16 989.7 -> 998.4 tok/s alone, 1002.2 with attention's trigger first
# (paged_attention.TRIGGER). WB_BLOCK_MAXNREG (a probe's switch) sets it.
MAXNREG = int(os.environ.get("WB_BLOCK_MAXNREG", "0")) or {4: 168, 8: 120}.get(WARPS)
# A timing probe's switch, never for results (WB_PROBE_FREE_UNPACK=1, bench/run_gpu.sh free): int8 words taken as
# floats with no unpacking, so the values are wrong, to measure what the consumers' unpacking costs a chain
FREE_UNPACK = gl.constexpr(os.environ.get("WB_PROBE_FREE_UNPACK", "0") == "1")
# A timing probe's switch (WB_PROBE_TRACE=1, bench/block_trace.py): every program stamps the global timer at its
# stages' edges into TRACES[counters' address] (int64 [programs, 16]; see _stamp's events)
TRACE = gl.constexpr(os.environ.get("WB_PROBE_TRACE", "0") == "1")
TRACES: dict[int, torch.Tensor] = {}
# A slot goes back to the producer with no proxy fence after the consumers' reads of it (as TMA pipelines release
# slots read by the generic proxy): the reads are done, in registers, before the release's barrier, and the TMA
# copy that overwrites the slot starts only after the producer has seen the release. Tenth session, call 5 (H100,
# batch 1, tok/s): without the fence 1B bf16 1010.6 -> 1019.5, 8B bf16 191.0 -> 194.5, int8 + logits 350.3 -> 351.6.
# WB_BLOCK_FENCE=1 (a probe's switch) puts it back.
FENCE = gl.constexpr(os.environ.get("WB_BLOCK_FENCE", "0") == "1")
# Paired slots (decode_block's `paired`): two tiles, the gate's and the up's rows or x's chunks kk and kk + 1, land on
# one barrier and go back on one, half the waits and releases a byte. WB_BLOCK_PAIR=1|0 (a probe's switch) sets it
# for every block.
PAIR_OVERRIDE = os.environ.get("WB_BLOCK_PAIR", "")
ROWS = {0: 8, 8: 16}  # a tile's rows by weight format (WQ); 8 for int8 measured slower (bench/run_gpu.sh tune9)
TILE_W = {0: 256, 8: 128}  # a tile's width in stored units: bf16 values, int32 words of four int8 values
CHUNK = {0: 256, 8: 512}  # values of x a tile spans


@gluon.jit
def _stamp(TR, event):
    """The probe's trace (TRACE): the global timer (ns) as this program's event: consumers 0 start, 1 after the PDL
    wait, 2 + 2s after stage s's own part (s < 3), 3 + 2s after its wait for every program's, 8 the end; the
    producer 9 start, 10 before its first wait for a slot (the ring full), 11 after it, 12 after stage 0's copies,
    13 after the last."""
    if TRACE:
        t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)
        gl.store(TR + gl.program_id(0) * 16 + event, t)


@gluon.jit
def _stamp_at(TR, event, now):
    """_stamp where `now` holds (the producer's ring-full events)."""
    if TRACE:
        if now:
            _stamp(TR, event)


@gluon.jit
def _produce(d_o, d_gu, d_dn, d_nx, ring, full, empty, N_NX, TR, H: gl.constexpr, I: gl.constexpr,
             WQ: gl.constexpr, PAIRED: gl.constexpr):
    """The producer warp: every weight tile of this program's four stages, in the consumers' order, into the ring."""
    CH: gl.constexpr = 512 if WQ == 8 else 256
    R: gl.constexpr = ring.type.shape[1]
    pid = gl.program_id(0)
    G = gl.num_programs(0)
    _stamp(TR, 9)
    c = _produce_stage(d_o, ring, full, empty, gl.to_tensor(0), pid, G, 0, 0, H // R, H // CH, False, TR, PAIRED)
    _stamp(TR, 12)
    c = _produce_stage(d_gu, ring, full, empty, c, pid, G, 0, I, I // R, H // CH, True, TR, PAIRED)
    c = _produce_stage(d_dn, ring, full, empty, c, pid, G, 0, 0, H // R, I // CH, False, TR, PAIRED)
    _produce_stage(d_nx, ring, full, empty, c, pid, G, 0, 0, N_NX // R, H // CH, False, TR, PAIRED)
    _stamp(TR, 13)


@gluon.jit
def _produce_stage(desc, ring, full, empty, c, pid, G, row0, up, tiles, steps, SWIGLU: gl.constexpr, TR,
                   PAIRED: gl.constexpr):
    """The producer: this program's tiles (from row row0; SWIGLU: each with its up rows, `up` below) in turn."""
    RING: gl.constexpr = ring.type.shape[0]
    R: gl.constexpr = ring.type.shape[1]
    W: gl.constexpr = ring.type.shape[2]
    if PAIRED:
        return _produce_pairs(desc, ring, full, empty, c, pid, G, row0, up, tiles, steps, SWIGLU, TR)
    for t in range(pid, tiles, G):
        for kk in range(steps):
            for half in gl.static_range(2 if SWIGLU else 1):  # gate rows, then the up rows I below them
                slot = c % RING
                _stamp_at(TR, 10, c == RING)
                mbarrier.wait(empty.index(slot), ((c // RING) & 1) ^ 1)
                _stamp_at(TR, 11, c == RING)
                mbarrier.expect(full.index(slot), desc.block_type.nbytes)
                tma.async_copy_global_to_shared(desc, [row0 + half * up + t * R, kk * W], full.index(slot),
                                                ring.index(slot))
                c += 1
    return c


@gluon.jit
def _produce_pairs(desc, ring, full, empty, c, pid, G, row0, up, tiles, steps, SWIGLU: gl.constexpr, TR):
    """_produce_stage with paired slots (PAIRED): c counts pairs; a pair is a tile's gate and up rows (SWIGLU) or its
    chunks kk and kk + 1."""
    PAIRS: gl.constexpr = ring.type.shape[0] // 2
    R: gl.constexpr = ring.type.shape[1]
    W: gl.constexpr = ring.type.shape[2]
    for t in range(pid, tiles, G):
        for kk in range(0, steps, 1 if SWIGLU else 2):
            p = c % PAIRS
            _stamp_at(TR, 10, c == PAIRS)
            mbarrier.wait(empty.index(p), ((c // PAIRS) & 1) ^ 1)
            _stamp_at(TR, 11, c == PAIRS)
            mbarrier.expect(full.index(p), 2 * desc.block_type.nbytes)
            if SWIGLU:
                tma.async_copy_global_to_shared(desc, [row0 + t * R, kk * W], full.index(p), ring.index(2 * p))
                tma.async_copy_global_to_shared(desc, [row0 + up + t * R, kk * W], full.index(p),
                                                ring.index(2 * p + 1))
            else:
                tma.async_copy_global_to_shared(desc, [row0 + t * R, kk * W], full.index(p), ring.index(2 * p))
                tma.async_copy_global_to_shared(desc, [row0 + t * R, (kk + 1) * W], full.index(p),
                                                ring.index(2 * p + 1))
            c += 1
    return c


@gluon.jit
def _take_pair(ring, full, empty, c):
    """Consumers (PAIRED): the ring's pair c once both tiles have landed; the pair goes back to the producer."""
    PAIRS: gl.constexpr = ring.type.shape[0] // 2
    p = c % PAIRS
    mbarrier.wait(full.index(p), (c // PAIRS) & 1)
    layout: gl.constexpr = _tile_layout(ring.type.shape[2], gl.num_warps())
    w0 = ring.index(2 * p).load(layout)
    w1 = ring.index(2 * p + 1).load(layout)
    if FENCE:
        fence_async_shared()
    mbarrier.arrive(empty.index(p), count=1)
    return w0, w1


@gluon.jit
def _int8_values(words):
    """The four int8 values of every int32 word, exactly, as fp32 (byte permutes under 2^23's exponent)."""
    if FREE_UNPACK:
        f = words.to(gl.float32, bitcast=True)
        return f, f, f, f
    m0, m1, m2, m3 = gl.inline_asm_elementwise(
        asm="""{ .reg .b32 t; xor.b32 t, $4, 0x80808080;
        prmt.b32 $0, t, 0x4B000000, 0x7540; prmt.b32 $1, t, 0x4B000000, 0x7541;
        prmt.b32 $2, t, 0x4B000000, 0x7542; prmt.b32 $3, t, 0x4B000000, 0x7543; }""",
        constraints="=r,=r,=r,=r,r", args=[words], dtype=(gl.float32, gl.float32, gl.float32, gl.float32),
        is_pure=True, pack=1)
    return m0 - 8388736.0, m1 - 8388736.0, m2 - 8388736.0, m3 - 8388736.0


@gluon.constexpr_function
def _tile_layout(width, warps):
    return gl.BlockedLayout([1, 8 if width == 256 else 4], [1, 32], [warps, 1], [1, 0])


@gluon.jit
def _take(ring, full, empty, c):
    """Consumers: the ring's tile c once it has landed; its slot goes back to the producer."""
    RING: gl.constexpr = ring.type.shape[0]
    slot = c % RING
    mbarrier.wait(full.index(slot), (c // RING) & 1)
    w = ring.index(slot).load(_tile_layout(ring.type.shape[2], gl.num_warps()))
    if FENCE:
        fence_async_shared()
    mbarrier.arrive(empty.index(slot), count=1)
    return w


@gluon.jit
def _fma(acc, w, xr, kk, WQ: gl.constexpr):
    """acc + the tile's products with x's chunk kk (int8: the words' four values against x's four columns)."""
    tile_l: gl.constexpr = _tile_layout(acc.type.shape[1], gl.num_warps())
    if WQ == 8:  # the chunk as [W, 4]: each thread holds its words' four values of x, split in registers
        q0, q1, q2, q3 = _int8_values(w)
        W: gl.constexpr = acc.type.shape[1]
        x4_l: gl.constexpr = gl.BlockedLayout([4, 4], [32, 1], [1, gl.num_warps()], [1, 0])
        x4 = xr.index(kk).load(x4_l).to(gl.float32)
        even, odd = gl.split(gl.reshape(x4, [W, 2, 2]))  # columns 0, 2 and 1, 3
        x0, x2 = gl.split(even)
        x1, x3 = gl.split(odd)
        col_l: gl.constexpr = gl.SliceLayout(0, tile_l)
        acc += q0 * gl.convert_layout(x0, col_l)[None, :]
        acc += q1 * gl.convert_layout(x1, col_l)[None, :]
        acc += q2 * gl.convert_layout(x2, col_l)[None, :]
        acc += q3 * gl.convert_layout(x3, col_l)[None, :]
    else:
        acc += w.to(gl.float32) * xr.index(kk).load(tile_l).to(gl.float32)
    return acc


@gluon.jit
def _arrive(CNT, idx):
    """Consumers: this program has written its part of stage idx (release)."""
    gl.thread_barrier()
    gl.atomic_add(CNT + idx, 1, sem="release", scope="gpu")


@gluon.jit
def _wait(CNT, idx, target):
    """Consumers: every program has written its part of stage idx (acquire)."""
    seen = gl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = gl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
    gl.thread_barrier()


@gluon.constexpr_function
def _input_rows(k, w):
    """Rows of a stage input of k values in rows of w: only those that hold x (the buffer's rows fit the widest)."""
    return triton.next_power_of_2(triton.cdiv(k, w))


@gluon.jit
def _input_offsets(K: gl.constexpr, W: gl.constexpr):
    """(offsets, mask) of x's K values in the stage input's layout: rows of W values."""
    tile_l: gl.constexpr = _tile_layout(W, gl.num_warps())
    rows = gl.arange(0, _input_rows(K, W), layout=gl.SliceLayout(1, tile_l))
    cols = gl.arange(0, W, layout=gl.SliceLayout(0, tile_l))
    offs = rows[:, None] * W + cols[None, :]
    return offs, offs < K


@gluon.jit
def _norm_operands(A, G, K: gl.constexpr, W: gl.constexpr):
    """The norm's residual A and weights G in the stage input's layout (bf16). Loaded before the wait for the stage
    before, which neither depends on: their latency then overlaps the wait."""
    offs, mask = _input_offsets(K, W)
    a = gl.load(A + offs, mask=mask, other=0.0, cache_modifier=".cg")
    g = gl.load(G + offs, mask=mask, other=0.0)
    return a, g


@gluon.jit
def _norm_terms(x, a, g, offs, mask, K, eps, HOUT, first):
    """h = a + x rounded to bf16 (program `first` writes it to HOUT), then rms_norm(h) * g with rms_norm.py's
    roundings: the squares summed in fp64, h * (1 / rms) rounded, times g, rounded."""
    h = (x + a.to(gl.float32)).to(gl.bfloat16)
    h = h.to(gl.float32)
    gl.store(HOUT + offs, h.to(gl.bfloat16), mask=mask & first)
    h64 = h.to(gl.float64)
    squares = h64 * h64
    var = (gl.sum(gl.sum(squares, axis=1), axis=0) / K).to(gl.float32)
    inv = 1.0 / gl.sqrt(var + eps)
    return (g.to(gl.float32) * (h * inv).to(gl.bfloat16).to(gl.float32)).to(gl.bfloat16).to(gl.float32)


@gluon.jit
def _stage_input(xs, X, a, g, HOUT, K: gl.constexpr, eps, NORM: gl.constexpr):
    """x [K] into shared memory, in rows of x's chunks: X, or (NORM) rms_norm(a + X) * g (a, g from _norm_operands),
    the sum written to HOUT by program 0. Only the rows that hold x are read and written (the buffer fits the widest
    stage)."""
    W: gl.constexpr = xs.type.shape[1]
    first = gl.program_id(0) == 0
    offs, mask = _input_offsets(K, W)
    x = gl.load(X + offs, mask=mask, other=0.0, cache_modifier=".cg").to(gl.float32)
    if NORM:
        x = _norm_terms(x, a, g, offs, mask, K, eps, HOUT, first)
    xs.slice(0, _input_rows(K, W)).store(x.to(gl.bfloat16))
    gl.thread_barrier()


@gluon.jit
def _stage(ring, full, empty, xs, c, Y, S, tiles, K: gl.constexpr, SWIGLU: gl.constexpr, WQ: gl.constexpr,
           PAIRED: gl.constexpr):
    """Consumers: this program's row tiles of the stage, x in shared memory, into Y (int8: times the rows' scales S;
    SWIGLU: silu(gate) * up with the unfused roundings, the rows' gate and up tiles in turn)."""
    R: gl.constexpr = ring.type.shape[1]
    W: gl.constexpr = ring.type.shape[2]
    XR: gl.constexpr = xs.type.shape[0]
    CH: gl.constexpr = 512 if WQ == 8 else 256
    tile_l: gl.constexpr = _tile_layout(W, gl.num_warps())
    y_l: gl.constexpr = gl.SliceLayout(1, tile_l)
    if WQ == 8:  # row r of x's chunks as [W, 4]: a word's four values of x
        xr = xs._reinterpret(gl.bfloat16, [XR, W, 4], xs.layout)
    else:  # row r of x's chunks as a [1, W] tile
        xr = xs._reinterpret(gl.bfloat16, [XR, 1, W], xs.layout)
    for t in range(gl.program_id(0), tiles, gl.num_programs(0)):
        rows = t * R + gl.arange(0, R, layout=y_l)
        if WQ == 8:  # the scales first: loaded after the sums, their latency would add to the tile's end
            s_gate = gl.load(S + rows)
            if SWIGLU:
                s_up = gl.load(S + tiles * R + rows)
        acc = gl.zeros([R, W], gl.float32, tile_l)
        accu = gl.zeros([R, W], gl.float32, tile_l)
        if PAIRED and SWIGLU:  # the gate's and the up's tile as one pair
            for kk in range(K // CH):
                w_gate, w_up = _take_pair(ring, full, empty, c)
                acc = _fma(acc, w_gate, xr, kk, WQ)
                accu = _fma(accu, w_up, xr, kk, WQ)
                c += 1
        elif PAIRED:  # x's chunks kk and kk + 1 as one pair (check: K // CH is even)
            for kk in range(0, K // CH, 2):
                w0, w1 = _take_pair(ring, full, empty, c)
                acc = _fma(acc, w0, xr, kk, WQ)
                acc = _fma(acc, w1, xr, kk + 1, WQ)
                c += 1
        else:
            for kk in range(K // CH):
                acc = _fma(acc, _take(ring, full, empty, c), xr, kk, WQ)
                c += 1
                if SWIGLU:
                    accu = _fma(accu, _take(ring, full, empty, c), xr, kk, WQ)
                    c += 1
        y = gl.sum(acc, axis=1)
        if WQ == 8:
            y = y * s_gate
        if SWIGLU:
            up = gl.sum(accu, axis=1)
            if WQ == 8:
                up = up * s_up
            gate = y.to(gl.bfloat16).to(gl.float32)
            silu = (gate / (1.0 + gl.exp(-gate))).to(gl.bfloat16).to(gl.float32)
            y = silu * up.to(gl.bfloat16).to(gl.float32)
        gl.store(Y + rows, y.to(gl.bfloat16))
    return c


@gluon.jit
def _consume(ring, full, empty, xs, X, RES, G2, GN, O, H1, ACT, D, H2, Y, S_o, S_gu, S_dn, S_nx, CNT, N_NX, eps2, eps_n,
             TR, H: gl.constexpr, I: gl.constexpr, WQ: gl.constexpr, USE_GDC: gl.constexpr, PAIRED: gl.constexpr):
    """The consumer warps: the four stages, each after every program finished the one before."""
    R: gl.constexpr = ring.type.shape[1]
    G = gl.num_programs(0)
    _stamp(TR, 0)
    if USE_GDC:  # X and RES come from the kernels before (programmatic dependent launch)
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
    _stamp(TR, 1)
    epoch = gl.atomic_add(CNT + 4, 0, sem="relaxed", scope="gpu")  # launches so far: counters are never reset
    target = (epoch + 1) * G
    W: gl.constexpr = xs.type.shape[1]
    _stage_input(xs, X, X, X, X, H, eps2, False)
    c = _stage(ring, full, empty, xs, gl.to_tensor(0), O, S_o, H // R, H, False, WQ, PAIRED)
    _arrive(CNT, 0)
    _stamp(TR, 2)
    res, g2 = _norm_operands(RES, G2, H, W)
    _wait(CNT, 0, target)
    _stamp(TR, 3)
    if gl.program_id(0) == 0:  # every program has read the epoch: the next launch may see it advanced
        gl.atomic_add(CNT + 4, 1, sem="relaxed", scope="gpu")
    _stage_input(xs, O, res, g2, H1, H, eps2, True)
    c = _stage(ring, full, empty, xs, c, ACT, S_gu, I // R, H, True, WQ, PAIRED)
    _arrive(CNT, 1)
    _stamp(TR, 4)
    _wait(CNT, 1, target)
    _stamp(TR, 5)
    _stage_input(xs, ACT, ACT, ACT, ACT, I, eps2, False)
    c = _stage(ring, full, empty, xs, c, D, S_dn, H // R, I, False, WQ, PAIRED)
    _arrive(CNT, 2)
    _stamp(TR, 6)
    h1, gn = _norm_operands(H1, GN, H, W)  # h1: program 0 wrote it before the wait for stage 1
    _wait(CNT, 2, target)
    _stamp(TR, 7)
    _stage_input(xs, D, h1, gn, H2, H, eps_n, True)
    _stage(ring, full, empty, xs, c, Y, S_nx, N_NX // R, H, False, WQ, PAIRED)
    _stamp(TR, 8)


@gluon.jit
def _buffers(desc, RING: gl.constexpr, XR: gl.constexpr, WQ: gl.constexpr, PAIRED: gl.constexpr):
    """Shared memory: the ring of RING weight tiles (desc's block), its full and empty barriers, and x (XR rows)."""
    ring = gl.allocate_shared_memory(gl.int32 if WQ == 8 else gl.bfloat16, [RING] + desc.block_type.shape,
                                     desc.layout)
    SLOTS: gl.constexpr = RING // 2 if PAIRED else RING  # barriers: a pair of slots shares its two
    full = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    xs = gl.allocate_shared_memory(gl.bfloat16, [XR, 512 if WQ == 8 else 256],
                                   gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))
    for i in gl.static_range(SLOTS):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    return ring, full, empty, xs


@gluon.jit
def _decode_block(d_o, d_gu, d_dn, d_nx, X, RES, G2, GN, O, H1, ACT, D, H2, Y, S_o, S_gu, S_dn, S_nx, CNT, N_NX,
                  eps2, eps_n, TR, H: gl.constexpr, I: gl.constexpr, RING: gl.constexpr, XR: gl.constexpr,
                  WQ: gl.constexpr, USE_GDC: gl.constexpr, PAIRED: gl.constexpr):
    ring, full, empty, xs = _buffers(d_o, RING, XR, WQ, PAIRED)
    if USE_GDC:  # the next kernel may launch now: its programs fit beside these and wait for this kernel's end
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False,
                                  pack=1)
    gl.warp_specialize([
        (_consume, (ring, full, empty, xs, X, RES, G2, GN, O, H1, ACT, D, H2, Y, S_o, S_gu, S_dn, S_nx, CNT, N_NX,
                    eps2, eps_n, TR, H, I, WQ, USE_GDC, PAIRED)),
        (_produce, (d_o, d_gu, d_dn, d_nx, ring, full, empty, N_NX, TR, H, I, WQ, PAIRED)),
    ], [1], [40])


def _shared_layout(wq: int):
    return gl.NVMMASharedLayout.get_default_for([ROWS[wq], TILE_W[wq]], gl.int32 if wq == 8 else gl.bfloat16)


def x_rows(wq: int, h: int, i: int) -> int:
    """Rows of the shared-memory x buffer: the widest stage input, in chunks of x (CHUNK values)."""
    return triton.next_power_of_2(max(h, i) // CHUNK[wq])


def check(x, w_o, w_gu, w_dn, w_nx, wq: int) -> tuple[int, int, int]:
    """(H, I, N_NX) of a block, or a ValueError naming what does not fit the kernel."""
    if x.dim() != 2 or x.shape[0] != 1 or x.dtype != torch.bfloat16:
        raise ValueError(f"decode_block: x must be one bf16 row, got {tuple(x.shape)} {x.dtype}")
    h = x.shape[1]
    i = w_gu.shape[0] // 2
    n_nx = w_nx.shape[0]
    per = 4 if wq == 8 else 1
    want = {"w_o": (h, h // per), "w_gu": (2 * i, h // per), "w_dn": (h, i // per), "w_nx": (n_nx, h // per)}
    for name, w in (("w_o", w_o), ("w_gu", w_gu), ("w_dn", w_dn), ("w_nx", w_nx)):
        if tuple(w.shape) != want[name] or not w.is_contiguous():
            raise ValueError(f"decode_block: {name} {tuple(w.shape)} does not fit x {tuple(x.shape)} (want "
                             f"{want[name]}, contiguous)")
    rows, ch = ROWS[wq], CHUNK[wq]
    if h % ch or i % ch or h % rows or i % rows or n_nx % rows:
        raise ValueError(f"decode_block: H={h}, I={i}, N={n_nx} must be multiples of {ch} (K) and {rows} (rows)")
    return h, i, n_nx


def pairs_fit(h: int, i: int, wq: int) -> bool:
    """Whether paired slots fit a block: every stage's K an even number of x's chunks."""
    return h // CHUNK[wq] % 2 == 0 and i // CHUNK[wq] % 2 == 0


def ring_slots(kib: int, wq: int) -> int:
    """Tiles a ring of `kib` KiB holds (weight format wq), or a ValueError: at least 4, and at most 160 KiB (the
    block's program must fit an SM's shared memory with its x buffer)."""
    tile = ROWS[wq] * TILE_W[wq] * (4 if wq == 8 else 2)
    if not 4 * tile <= kib * 1024 <= 160 * 1024:
        raise ValueError(f"decode_block: a ring of {kib} KiB: want 4 tiles of {tile // 1024} KiB to 160 KiB")
    return kib * 1024 // tile


def decode_block(x, res, g2, eps2: float, w_o, w_gu, w_dn, gn, eps_n: float, w_nx, counters: torch.Tensor,
                 scales: tuple | None = None, use_gdc: bool = False,
                 ring_kib: int | None = None, paired: bool = False) -> dict[str, torch.Tensor]:
    """The block on the GPU: x [1, H] (attention's output), res [1, H]; bf16 weights, or int8 weights viewed as int32
    words [N, K / 4] with their per-channel scales (o, gate_up, down, next). counters: int32 [5] of zeros, kept
    between calls (one a call site: they count launches). ring_kib: the weight ring's size (RING_KIB if None);
    paired: the ring's slots in pairs, where the shapes allow (pairs_fit). Returns o, h1, act, d, h2, y."""
    wq = 8 if scales is not None else 0
    h, i, n_nx = check(x, w_o, w_gu, w_dn, w_nx, wq)
    ring = ring_slots(RING_OVERRIDE or ring_kib or RING_KIB, wq)
    paired = {"1": True, "0": False}.get(PAIR_OVERRIDE, paired) and pairs_fit(h, i, wq)
    if counters.dtype != torch.int32 or counters.numel() != 5 or counters.device != x.device:
        raise ValueError(f"decode_block: counters must be 5 int32 on {x.device}, got {counters.numel()} "
                         f"{counters.dtype} on {counters.device}")
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    layout = _shared_layout(wq)
    block = [ROWS[wq], TILE_W[wq]]
    descs = [TensorDescriptor.from_tensor(w, block, layout) for w in (w_o, w_gu, w_dn, w_nx)]
    new = lambda n: torch.empty(1, n, dtype=torch.bfloat16, device=x.device)  # noqa: E731
    out = {"o": new(h), "h1": new(h), "act": new(i), "d": new(h), "h2": new(h), "y": new(n_nx)}
    s = scales if scales is not None else (x,) * 4
    programs = torch.cuda.get_device_properties(x.device).multi_processor_count
    trace = counters
    if TRACE:
        if counters.data_ptr() not in TRACES:  # made once: a fill in every call would sit between the kernels
            TRACES[counters.data_ptr()] = torch.zeros(programs, 16, dtype=torch.int64, device=x.device)
        trace = TRACES[counters.data_ptr()]
    _decode_block[(programs,)](*descs, x, res, g2, gn, out["o"], out["h1"], out["act"], out["d"], out["h2"], out["y"],
                               *s, counters, n_nx, float(eps2), float(eps_n), trace, H=h, I=i, RING=ring,
                               XR=x_rows(wq, h, i), WQ=wq, USE_GDC=use_gdc, PAIRED=paired, num_warps=WARPS,
                               **({"maxnreg": MAXNREG} if MAXNREG else {}),
                               **({"launch_pdl": True} if use_gdc else {}))
    return out


def decode_block_ref(x, res, g2, eps2: float, w_o, w_gu, w_dn, gn, eps_n: float, w_nx,
                     scales: tuple | None = None) -> dict[str, torch.Tensor]:
    """The block by the plugins' torch references (weights as decode_block takes them)."""
    from workbench.plugins.gemv import gemv_ref, w8a16_gemv_ref
    from workbench.plugins.rms_norm import add_rms_norm_ref

    def lin(a, w, k, swiglu=False):
        if scales is None:
            return gemv_ref(a, w, swiglu=swiglu)
        return w8a16_gemv_ref(a, w.view(torch.int8), scales[k], swiglu=swiglu)

    o = lin(x, w_o, 0)
    h1, n1 = add_rms_norm_ref(o, res, g2, eps2)
    act = lin(n1, w_gu, 1, swiglu=True)
    d = lin(act, w_dn, 2)
    h2, n2 = add_rms_norm_ref(d, h1, gn, eps_n)
    return {"o": o, "h1": h1, "act": act, "d": d, "h2": h2, "y": lin(n2, w_nx, 3)}
