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


SB = gl.constexpr(16)  # keys a step of the attention loop reads from shared memory


@gluon.constexpr_function
def _layout(warps):
    """[heads, keys, head dim]: a warp a query head, keys over 4 threads, the head dim over 8 threads by 4."""
    return gl.BlockedLayout([1, 1, 4], [1, 4, 8], [warps, 1, 1], [2, 1, 0])


@gluon.constexpr_function
def _rows_layout(hd, warps):
    """[keys, head dim] as the cache holds it: 8 values (16 bytes) a thread, a row over hd / 8 threads."""
    return gl.BlockedLayout([1, 8], [32 * 8 // hd, hd // 8], [warps, 1], [1, 0])


@gluon.jit
def _bf16(x):
    """fp32 x rounded to bf16 (nearest, ties to even) on its bits, kept in fp32 (common.rounded's arithmetic)."""
    bits = x.to(gl.uint32, bitcast=True)
    bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
    return bits.to(gl.float32, bitcast=True)


@gluon.jit
def _rotated(X, COS, SIN, d, mask, HD: gl.constexpr):
    """Rows X rotated at columns d (rope of rotate-half) as paged_attention._rotated rounds it: x*c and partner*s
    each to bf16, then their difference (first half) or sum, to bf16."""
    half = d < HD // 2
    partner = gl.where(half, d + HD // 2, d - HD // 2)
    a = _bf16(gl.load(X + d, mask=mask, other=0.0).to(gl.float32) * gl.load(COS + d).to(gl.float32))
    b = _bf16(gl.load(X + partner, mask=mask, other=0.0).to(gl.float32) * gl.load(SIN + d).to(gl.float32))
    return _bf16(gl.where(half, a - b, a + b))


@gluon.jit
def _stage_kv(kvs, QKV, KV, TABLE, COS, SIN, length, pos, slot, lo, hi, kvh, s_cos, s_blk, s_kv, s_pg, s_h, cap,
              HQ: gl.constexpr, HKV: gl.constexpr, HD: gl.constexpr, PAGE: gl.constexpr, BN: gl.constexpr):
    """The partition's keys and values (BN rows from lo) into shared memory kvs [2 BN, HD], read at once: the new
    token's from qkv (its key rotated; both stored in the cache by the item whose partition holds it), rows past
    the sequence zeroed (the table's padding pages)."""
    rows_l: gl.constexpr = _rows_layout(HD, gl.num_warps())
    n = lo + gl.arange(0, BN, layout=gl.SliceLayout(1, rows_l))
    d = gl.arange(0, HD, layout=gl.SliceLayout(0, rows_l))
    inside = n < cap
    page = gl.load(TABLE + n // PAGE, mask=inside, other=0).to(gl.int64)
    at = page * s_blk + (n % PAGE).to(gl.int64) * s_pg + kvh * s_h
    lmask = inside[:, None] & (d < HD)[None, :]
    k = gl.load(KV + at[:, None] + d[None, :], mask=lmask, other=0.0)
    v = gl.load(KV + s_kv + at[:, None] + d[None, :], mask=lmask, other=0.0)
    k_new = _rotated(QKV + (HQ + kvh) * HD, COS + pos * s_cos, SIN + pos * s_cos, d, d < HD, HD).to(gl.bfloat16)
    v_new = gl.load(QKV + (HQ + HKV + kvh) * HD + d)
    mine = (slot >= 0) & (lo <= length - 1) & (length - 1 < hi)
    dst = KV + (slot // PAGE) * s_blk + (slot % PAGE) * s_pg + kvh * s_h + d
    gl.store(dst, k_new, mask=(d < HD) & mine)
    gl.store(dst + s_kv, v_new, mask=(d < HD) & mine)
    new = (n == length - 1)[:, None]
    real = (n < hi)[:, None]
    k = gl.where(new, k_new[None, :], k)
    v = gl.where(real, gl.where(new, v_new[None, :], v), 0.0)
    gl.thread_barrier()  # the program's item before has read the buffer
    kvs.slice(0, BN).store(k)
    kvs.slice(BN, BN).store(v)
    gl.thread_barrier()


@gluon.jit
def _item(kvs, QKV, KV, TABLE, COS, SIN, PACC, PML, length, pos, slot, kvh, part, s_cos, s_blk, s_kv, s_pg, s_h,
          cap, scale_log2, HQ: gl.constexpr, HKV: gl.constexpr, HD: gl.constexpr, PAGE: gl.constexpr,
          PART: gl.constexpr, NUM_PARTS: gl.constexpr):
    """One (kv head, partition of up to 64 keys): its query heads' partial output and softmax statistics into
    PACC, PML. The keys and values go to shared memory in one read; the loop takes them SB at a time from there."""
    REP: gl.constexpr = HQ // HKV
    RP: gl.constexpr = _pow2(REP)
    BN: gl.constexpr = _pow2(PART)
    L3: gl.constexpr = _layout(gl.num_warps())
    q_l: gl.constexpr = gl.SliceLayout(1, L3)  # [heads, HD]
    kv_l: gl.constexpr = gl.SliceLayout(0, L3)  # [keys, HD]
    s_l: gl.constexpr = gl.SliceLayout(2, L3)  # [heads, keys]
    lo = part * PART
    hi = gl.minimum(lo + PART, length)
    _stage_kv(kvs, QKV, KV, TABLE, COS, SIN, length, pos, slot, lo, hi, kvh, s_cos, s_blk, s_kv, s_pg, s_h, cap, HQ,
              HKV, HD, PAGE, BN)
    r = gl.arange(0, RP, layout=gl.SliceLayout(1, q_l))
    d = gl.arange(0, HD, layout=gl.SliceLayout(0, q_l))
    hmask = (r < REP)[:, None] & (d < HD)[None, :]
    heads = kvh * REP + r
    q = _rotated(QKV + heads[:, None] * HD, COS + pos * s_cos, SIN + pos * s_cos, d[None, :], hmask, HD)
    q3 = gl.expand_dims(q, 1)
    keys = kvs._reinterpret(gl.bfloat16, [2 * BN // SB, SB, HD], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    m_i = gl.full([RP], float("-inf"), gl.float32, gl.SliceLayout(1, s_l))
    l_i = gl.zeros([RP], gl.float32, gl.SliceLayout(1, s_l))
    acc = gl.zeros([RP, SB, HD], gl.float32, L3)
    for j in range(0, gl.cdiv(hi - lo, SB)):
        k = keys.index(j).load(kv_l).to(gl.float32)
        v = keys.index(BN // SB + j).load(kv_l).to(gl.float32)
        qk = gl.sum(q3 * gl.expand_dims(k, 0), axis=2) * scale_log2
        ns = lo + j * SB + gl.arange(0, SB, layout=gl.SliceLayout(0, s_l))
        qk = gl.where((ns < hi)[None, :], qk, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(qk, axis=1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(qk - m_safe[:, None])
        alpha = gl.exp2(m_i - m_safe)
        l_i = l_i * alpha + gl.sum(p, axis=1)
        alpha3 = gl.expand_dims(gl.expand_dims(alpha, 1), 2)
        acc = acc * alpha3 + gl.expand_dims(_bf16(p), 2) * gl.expand_dims(v, 0)
        m_i = m_new
    out = gl.sum(acc, axis=1)  # [heads, HD] in q_l
    idx = heads * NUM_PARTS + part
    gl.store(PACC + idx[:, None] * HD + d[None, :], out, mask=hmask)
    rs = gl.arange(0, RP, layout=gl.SliceLayout(1, s_l))
    idx_s = (kvh * REP + rs) * NUM_PARTS + part
    gl.store(PML + idx_s * 2, m_i, mask=rs < REP)
    gl.store(PML + idx_s * 2 + 1, l_i, mask=rs < REP)


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
def attention_stage(xs, OUT, QKV, KV, TABLE, SEQ_LENS, POS, SLOTS, COS, SIN, PACC, PML, MCNT, CNT_A, s_cos, s_blk, s_kv,
                    s_pg, s_h, cap, scale_log2, HQ: gl.constexpr, HKV: gl.constexpr, HD: gl.constexpr,
                    PAGE: gl.constexpr, PART: gl.constexpr, NUM_PARTS: gl.constexpr):
    """Consumers: this program's items, a partition's keys and values in the block's x buffer xs (unused until the
    stage after); the last item of a head group merges it and counts it on CNT_A (release)."""
    kvs = xs._reinterpret(gl.bfloat16, [2 * _pow2(PART), HD], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    length = gl.load(SEQ_LENS).to(gl.int32)
    pos = gl.load(POS).to(gl.int64)
    slot = gl.load(SLOTS).to(gl.int64)
    for it in range(gl.program_id(0), HKV * NUM_PARTS, gl.num_programs(0)):
        kvh = it // NUM_PARTS
        _item(kvs, QKV, KV, TABLE, COS, SIN, PACC, PML, length, pos, slot, kvh, it % NUM_PARTS, s_cos, s_blk, s_kv,
              s_pg, s_h, cap, scale_log2, HQ, HKV, HD, PAGE, PART, NUM_PARTS)
        gl.thread_barrier()  # every thread's partials stored, before the release below
        if gl.atomic_add(MCNT + kvh, 1, sem="acq_rel", scope="gpu") == NUM_PARTS - 1:
            gl.atomic_xchg(MCNT + kvh, 0, sem="relaxed", scope="gpu")  # zero again for the next launch
            _merge(OUT, PACC, PML, kvh, HQ, HKV, HD, NUM_PARTS)
            gl.thread_barrier()
            gl.atomic_add(CNT_A, 1, sem="release", scope="gpu")
