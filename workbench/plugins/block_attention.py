"""The decode step's attention as the first stage of the layer block kernel (plugins/decode_block.py), for one
sequence: rope of the new token's query and key, the key and value stored in the paged cache, flash-decoding over
the cache's partitions and the merge of their softmax statistics, all in the block's consumer warps.

Why inside the block: as a kernel of its own, attention sits between two block kernels, and while it runs (a chain
of dependent loads, about 7 us a layer on an H100) no weights stream. Inside, the block's producer warp keeps
copying o_proj's tiles into the ring while the consumers attend, so the attention's latency overlaps the stream.

The arithmetic is paged_attention.paged_decode_attention_rope's: the same rope roundings (so the cache gets the same
bits), scores and values in fp32 from bf16 operands, probabilities rounded to bf16 before they weigh the values,
the same merge. Only the order of the sums differs (CUDA-core products here, the tensor cores there).

Work: item (kv head, partition of up to 64 keys), HKV * NUM_PARTS of them dealt over the programs; a partition's
keys spread over the threads and warps, each thread holding its keys' products for every query head of the group,
so a key is read once, and the head dim taken 32 values at a time. Each item stores its partials; the last of a
head's items to finish (a device counter that it zeroes again) merges them, all read at once, writes the heads'
output and counts itself on the stage counter the block waits for.
"""

from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

@gluon.constexpr_function
def _pow2(n):
    return triton.next_power_of_2(n)


@gluon.constexpr_function
def _layout(rp, warps):
    """[heads, keys, 32 of the head dim]: a thread's heads in its registers, keys over 4 threads and the warps, the
    head dim's 32 over 8 threads by 4 (a partition's keys and values are read once, not once a head)."""
    return gl.BlockedLayout([rp, 1, 4], [1, 4, 8], [1, warps, 1], [2, 1, 0])


@gluon.jit
def _bf16(x):
    """fp32 x rounded to bf16 (nearest, ties to even) on its bits, kept in fp32 (common.rounded's arithmetic)."""
    bits = x.to(gl.uint32, bitcast=True)
    bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
    return bits.to(gl.float32, bitcast=True)


@gluon.jit
def _rope_chunk(X, cos, sin, ci: gl.constexpr, NC: gl.constexpr, offs, mask):
    """Chunk ci (32 values) of rows X rotated as paged_attention._rotated rounds it: x*c and partner*s each to
    bf16, then their difference (first half) or sum, to bf16; the partner is the chunk half a head away."""
    pc: gl.constexpr = (ci + NC // 2) % NC
    x = gl.load(X + ci * 32 + offs, mask=mask, other=0.0).to(gl.float32)
    partner = gl.load(X + pc * 32 + offs, mask=mask, other=0.0).to(gl.float32)
    a = _bf16(x * cos.to(gl.float32))
    b = _bf16(partner * sin.to(gl.float32))
    if ci < NC // 2:
        return _bf16(a - b)
    else:
        return _bf16(a + b)


@gluon.jit
def _item(QKV, KV, TABLE, COS, SIN, PACC, PML, length, pos, slot, kvh, part, s_cos, s_blk, s_kv, s_pg, s_h, cap,
          scale_log2, HQ: gl.constexpr, HKV: gl.constexpr, HD: gl.constexpr, PAGE: gl.constexpr,
          PART: gl.constexpr, NUM_PARTS: gl.constexpr):
    """One (kv head, partition of PART <= 64 keys, one block): its query heads' partial output and softmax
    statistics into PACC, PML. The head dim goes by chunks of 32, so no thread holds more than a chunk's products."""
    REP: gl.constexpr = HQ // HKV
    RP: gl.constexpr = _pow2(REP)
    BN: gl.constexpr = _pow2(PART)
    NC: gl.constexpr = HD // 32
    L3: gl.constexpr = _layout(RP, gl.num_warps())
    q_l: gl.constexpr = gl.SliceLayout(1, L3)  # [heads, 32]
    kv_l: gl.constexpr = gl.SliceLayout(0, L3)  # [keys, 32]
    s_l: gl.constexpr = gl.SliceLayout(2, L3)  # [heads, keys]
    lo = part * PART
    hi = gl.minimum(lo + PART, length)
    mine = (slot >= 0) & (lo <= length - 1) & (length - 1 < hi)
    kd = gl.arange(0, 32, layout=gl.SliceLayout(0, kv_l))
    n = lo + gl.arange(0, BN, layout=gl.SliceLayout(1, kv_l))
    inside = n < cap
    page = gl.load(TABLE + n // PAGE, mask=inside, other=0).to(gl.int64)
    row = KV + page * s_blk + (n % PAGE).to(gl.int64) * s_pg + kvh * s_h
    lmask = inside[:, None] & (kd < 32)[None, :]
    new = (n == length - 1)[:, None]
    real = (n < hi)[:, None]
    r = gl.arange(0, RP, layout=gl.SliceLayout(1, q_l))
    d = gl.arange(0, 32, layout=gl.SliceLayout(0, q_l))
    hmask = (r < REP)[:, None] & (d < 32)[None, :]
    heads = kvh * REP + r
    kslot = KV + (slot // PAGE) * s_blk + (slot % PAGE) * s_pg + kvh * s_h
    qk = gl.zeros([RP, BN], gl.float32, s_l)
    for ci in gl.static_range(NC):
        k = gl.load(row[:, None] + ci * 32 + kd[None, :], mask=lmask, other=0.0).to(gl.float32)
        c = gl.load(COS + pos * s_cos + ci * 32 + d)
        sn = gl.load(SIN + pos * s_cos + ci * 32 + d)
        q = _rope_chunk(QKV + heads[:, None] * HD, c[None, :], sn[None, :], ci, NC, d[None, :], hmask)
        ck = gl.load(COS + pos * s_cos + ci * 32 + kd)
        sk = gl.load(SIN + pos * s_cos + ci * 32 + kd)
        k_new = _rope_chunk(QKV + (HQ + kvh) * HD, ck, sk, ci, NC, kd, kd < 32)
        gl.store(kslot + ci * 32 + kd, k_new.to(gl.bfloat16), mask=(kd < 32) & mine)
        k = gl.where(new, k_new[None, :], k)  # the new token's key from qkv: this program stored it just now
        qk += gl.sum(gl.expand_dims(q, 1) * gl.expand_dims(k, 0), axis=2)
    ns = lo + gl.arange(0, BN, layout=gl.SliceLayout(0, s_l))
    qk = gl.where((ns < hi)[None, :], qk * scale_log2, float("-inf"))
    m = gl.max(qk, axis=1)
    m_safe = gl.where(m == float("-inf"), 0.0, m)
    p = gl.exp2(qk - m_safe[:, None])
    l = gl.sum(p, axis=1)
    p3 = gl.expand_dims(_bf16(p), 2)
    idx = heads * NUM_PARTS + part
    for ci in gl.static_range(NC):
        v = gl.load(row[:, None] + s_kv + ci * 32 + kd[None, :], mask=lmask, other=0.0).to(gl.float32)
        v_new = gl.load(QKV + (HQ + HKV + kvh) * HD + ci * 32 + kd)
        gl.store(kslot + s_kv + ci * 32 + kd, v_new, mask=(kd < 32) & mine)
        v = gl.where(new, v_new.to(gl.float32)[None, :], v)
        v = gl.where(real, v, 0.0)  # past the sequence: the table's padding pages, weighed 0
        pv = gl.sum(p3 * gl.expand_dims(v, 0), axis=1)
        gl.store(PACC + idx[:, None] * HD + ci * 32 + d[None, :], pv, mask=hmask)
    rs = gl.arange(0, RP, layout=gl.SliceLayout(1, s_l))
    idx_s = (kvh * REP + rs) * NUM_PARTS + part
    gl.store(PML + idx_s * 2, m, mask=rs < REP)
    gl.store(PML + idx_s * 2 + 1, l, mask=rs < REP)


@gluon.jit
def _merge(OUT, PACC, PML, kvh, HQ: gl.constexpr, HKV: gl.constexpr, HD: gl.constexpr, NUM_PARTS: gl.constexpr):
    """Head group kvh's partitions merged by their softmax statistics (paged_attention._merge), into OUT (bf16):
    every partial read at once."""
    REP: gl.constexpr = HQ // HKV
    RP: gl.constexpr = _pow2(REP)
    L3: gl.constexpr = gl.BlockedLayout([RP, 1, 4], [1, 4, 8], [1, gl.num_warps(), 1], [2, 1, 0])  # [heads, parts, HD]
    o_l: gl.constexpr = gl.SliceLayout(1, L3)
    ml_l: gl.constexpr = gl.SliceLayout(2, L3)
    r = gl.arange(0, RP, layout=gl.SliceLayout(1, ml_l))
    p = gl.arange(0, NUM_PARTS, layout=gl.SliceLayout(0, ml_l))
    first = (kvh * REP + r) * NUM_PARTS
    at = first[:, None] + p[None, :]
    rmask = (r < REP)[:, None] & (p < NUM_PARTS)[None, :]
    m = gl.load(PML + at * 2, mask=rmask, other=float("-inf"), cache_modifier=".cg")
    l = gl.load(PML + at * 2 + 1, mask=rmask, other=0.0, cache_modifier=".cg")
    d = gl.arange(0, HD, layout=gl.SliceLayout(0, o_l))
    d3 = gl.expand_dims(gl.expand_dims(d, 0), 1)
    acc = gl.load(PACC + gl.expand_dims(at, 2) * HD + d3, mask=gl.expand_dims(rmask, 2) & (d3 < HD),
                  other=0.0, cache_modifier=".cg")
    m_max = gl.max(m, axis=1)
    m_max = gl.where(m_max == float("-inf"), 0.0, m_max)
    w = gl.exp2(m - m_max[:, None])  # empty partitions (m = -inf) weigh 0
    den = gl.sum(l * w, axis=1)
    num = gl.sum(acc * gl.expand_dims(w, 2), axis=1)
    out = num / gl.convert_layout(gl.where(den == 0.0, 1.0, den), gl.SliceLayout(1, o_l))[:, None]
    ro = gl.arange(0, RP, layout=gl.SliceLayout(1, o_l))
    heads = kvh * REP + ro
    gl.store(OUT + heads[:, None] * HD + d[None, :], out.to(gl.bfloat16), mask=(ro < REP)[:, None] & (d < HD)[None, :])


@gluon.jit
def attention_stage(OUT, QKV, KV, TABLE, SEQ_LENS, POS, SLOTS, COS, SIN, PACC, PML, MCNT, CNT_A, s_cos, s_blk, s_kv,
                    s_pg, s_h, cap, scale_log2, HQ: gl.constexpr, HKV: gl.constexpr, HD: gl.constexpr,
                    PAGE: gl.constexpr, PART: gl.constexpr, NUM_PARTS: gl.constexpr):
    """Consumers: this program's items; the last item of a head group merges it and counts it on CNT_A (release)."""
    length = gl.load(SEQ_LENS).to(gl.int32)
    pos = gl.load(POS).to(gl.int64)
    slot = gl.load(SLOTS).to(gl.int64)
    for it in range(gl.program_id(0), HKV * NUM_PARTS, gl.num_programs(0)):
        kvh = it // NUM_PARTS
        _item(QKV, KV, TABLE, COS, SIN, PACC, PML, length, pos, slot, kvh, it % NUM_PARTS, s_cos, s_blk, s_kv,
              s_pg, s_h, cap, scale_log2, HQ, HKV, HD, PAGE, PART, NUM_PARTS)
        gl.thread_barrier()  # every thread's partials stored, before the release below
        if gl.atomic_add(MCNT + kvh, 1, sem="acq_rel", scope="gpu") == NUM_PARTS - 1:
            gl.atomic_xchg(MCNT + kvh, 0, sem="relaxed", scope="gpu")  # zero again for the next launch
            _merge(OUT, PACC, PML, kvh, HQ, HKV, HD, NUM_PARTS)
            gl.thread_barrier()
            gl.atomic_add(CNT_A, 1, sem="release", scope="gpu")
