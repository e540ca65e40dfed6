"""The decode step's attention as the first stage of the layer block kernel (plugins/decode_block.py), for one
sequence: rope of the new token's query and key, the key and value stored in the paged cache, flash-decoding over
the cache's partitions and the merge of their softmax statistics, all in the block's consumer warps.

Why inside the block: as a kernel of its own, attention sits between two block kernels, and while it runs (a chain
of dependent loads, about 7 us a layer on an H100) no weights stream. Inside, the block's producer warp keeps
copying o_proj's tiles into the ring while the consumers attend, so the attention's latency overlaps the stream.

The arithmetic is paged_attention.paged_decode_attention_rope's: the same rope roundings (so the cache gets the same
bits), scores and values in fp32 from bf16 operands, probabilities rounded to bf16 before they weigh the values,
the same merge. Only the order of the sums differs (CUDA-core products here, the tensor cores there).

Work: item (kv head, partition), HKV * NUM_PARTS of them dealt over the programs; a warp a query head of the group,
keys in blocks of BN. Each item stores its partials; the last of a head's items to finish (a device counter that it
zeroes again) merges them, writes the heads' output and counts itself on the stage counter the block waits for.
"""

from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

BN = gl.constexpr(16)  # keys a block of the attention loop


@gluon.constexpr_function
def _pow2(n):
    return triton.next_power_of_2(n)


@gluon.constexpr_function
def _layout(warps):
    """[heads, keys, head dim]: a warp a query head, keys over 4 threads, the head dim over 8 threads by 4."""
    return gl.BlockedLayout([1, 1, 4], [1, 4, 8], [warps, 1, 1], [2, 1, 0])


@gluon.jit
def _bf16(x):
    """fp32 x rounded to bf16 (nearest, ties to even) on its bits, kept in fp32 (common.rounded's arithmetic)."""
    bits = x.to(gl.uint32, bitcast=True)
    bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
    return bits.to(gl.float32, bitcast=True)


@gluon.jit
def _rotated(x, partner, c, s, first_half):
    """Rotate-half rope as paged_attention._rotated rounds it: x*c and partner*s each to bf16, then their
    difference (first half) or sum, to bf16."""
    a = _bf16(x.to(gl.float32) * c.to(gl.float32))
    b = _bf16(partner.to(gl.float32) * s.to(gl.float32))
    return _bf16(gl.where(first_half, a - b, a + b))


@gluon.jit
def _new_kv(QKV, KV, COS, SIN, pos, slot, mine, kvh, s_cos, s_blk, s_kv, s_pg, s_h, HQ: gl.constexpr,
            HKV: gl.constexpr, HD: gl.constexpr, PAGE: gl.constexpr, layout: gl.constexpr):
    """The new token's rotated key and its value of head kvh ([HD] fp32 of bf16 values, `layout`), stored at the
    cache slot when `mine` (the item whose partition holds the token)."""
    d = gl.arange(0, HD, layout=layout)
    half = d < HD // 2
    partner = gl.where(half, d + HD // 2, d - HD // 2)
    c = gl.load(COS + pos * s_cos + d)
    s = gl.load(SIN + pos * s_cos + d)
    k = _rotated(gl.load(QKV + (HQ + kvh) * HD + d), gl.load(QKV + (HQ + kvh) * HD + partner), c, s, half)
    v = gl.load(QKV + (HQ + HKV + kvh) * HD + d).to(gl.float32)
    dst = KV + (slot // PAGE) * s_blk + (slot % PAGE) * s_pg + kvh * s_h + d
    keep = (d < HD) & mine
    gl.store(dst, k.to(gl.bfloat16), mask=keep)
    gl.store(dst + s_kv, v.to(gl.bfloat16), mask=keep)
    return k, v


@gluon.jit
def _item(QKV, KV, TABLE, COS, SIN, PACC, PML, length, pos, slot, kvh, part, s_cos, s_blk, s_kv, s_pg, s_h, cap,
          scale_log2, HQ: gl.constexpr, HKV: gl.constexpr, HD: gl.constexpr, PAGE: gl.constexpr,
          PART: gl.constexpr, NUM_PARTS: gl.constexpr):
    """One (kv head, partition): its query heads' partial output and softmax statistics into PACC, PML."""
    REP: gl.constexpr = HQ // HKV
    RP: gl.constexpr = _pow2(REP)
    L3: gl.constexpr = _layout(gl.num_warps())
    q_l: gl.constexpr = gl.SliceLayout(1, L3)  # [heads, HD]
    kv_l: gl.constexpr = gl.SliceLayout(0, L3)  # [keys, HD]
    s_l: gl.constexpr = gl.SliceLayout(2, L3)  # [heads, keys]
    r = gl.arange(0, RP, layout=gl.SliceLayout(1, q_l))
    d = gl.arange(0, HD, layout=gl.SliceLayout(0, q_l))
    hmask = (r < REP)[:, None] & (d < HD)[None, :]
    heads = kvh * REP + r
    half = d < HD // 2
    partner = gl.where(half, d + HD // 2, d - HD // 2)
    c = gl.load(COS + pos * s_cos + d)
    s = gl.load(SIN + pos * s_cos + d)
    qrow = QKV + heads[:, None] * HD
    q = _rotated(gl.load(qrow + d[None, :], mask=hmask, other=0.0),
                 gl.load(qrow + partner[None, :], mask=hmask, other=0.0), c[None, :], s[None, :], half[None, :])
    lo = part * PART
    hi = gl.minimum(lo + PART, length)
    mine = (slot >= 0) & (lo <= length - 1) & (length - 1 < hi)
    kd_l: gl.constexpr = gl.SliceLayout(0, kv_l)
    k_new, v_new = _new_kv(QKV, KV, COS, SIN, pos, slot, mine, kvh, s_cos, s_blk, s_kv, s_pg, s_h, HQ, HKV, HD,
                           PAGE, kd_l)
    kd = gl.arange(0, HD, layout=kd_l)
    q3 = gl.expand_dims(q, 1)
    m_i = gl.full([RP], float("-inf"), gl.float32, gl.SliceLayout(1, s_l))
    l_i = gl.zeros([RP], gl.float32, gl.SliceLayout(1, s_l))
    acc = gl.zeros([RP, BN, HD], gl.float32, L3)
    for s0 in range(lo, hi, BN):
        n = s0 + gl.arange(0, BN, layout=gl.SliceLayout(1, kv_l))
        inside = n < cap
        page = gl.load(TABLE + n // PAGE, mask=inside, other=0).to(gl.int64)
        row = page * s_blk + (n % PAGE).to(gl.int64) * s_pg + kvh * s_h
        lmask = inside[:, None] & (kd < HD)[None, :]
        k = gl.load(KV + row[:, None] + kd[None, :], mask=lmask, other=0.0).to(gl.float32)
        v = gl.load(KV + s_kv + row[:, None] + kd[None, :], mask=lmask, other=0.0).to(gl.float32)
        new = (n == length - 1)[:, None]
        k = gl.where(new, k_new[None, :], k)
        v = gl.where(new, v_new[None, :], v)
        v = gl.where((n < hi)[:, None], v, 0.0)  # past the sequence: the table's padding pages, weighed 0
        qk = gl.sum(q3 * gl.expand_dims(k, 0), axis=2) * scale_log2
        ns = s0 + gl.arange(0, BN, layout=gl.SliceLayout(0, s_l))
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
    """Head group kvh's partitions merged by their softmax statistics (paged_attention._merge), into OUT (bf16)."""
    REP: gl.constexpr = HQ // HKV
    RP: gl.constexpr = _pow2(REP)
    q_l: gl.constexpr = gl.SliceLayout(1, _layout(gl.num_warps()))
    r = gl.arange(0, RP, layout=gl.SliceLayout(1, q_l))
    d = gl.arange(0, HD, layout=gl.SliceLayout(0, q_l))
    rmask = r < REP
    first = (kvh * REP + r) * NUM_PARTS
    m_max = gl.full([RP], float("-inf"), gl.float32, gl.SliceLayout(1, q_l))
    for p in range(NUM_PARTS):
        m_max = gl.maximum(m_max, gl.load(PML + (first + p) * 2, mask=rmask, other=float("-inf"),
                                          cache_modifier=".cg"))
    m_max = gl.where(m_max == float("-inf"), 0.0, m_max)
    num = gl.zeros([RP, HD], gl.float32, q_l)
    den = gl.zeros([RP], gl.float32, gl.SliceLayout(1, q_l))
    for p in range(NUM_PARTS):
        w = gl.exp2(gl.load(PML + (first + p) * 2, mask=rmask, other=float("-inf"), cache_modifier=".cg") - m_max)
        num += gl.load(PACC + (first + p)[:, None] * HD + d[None, :], mask=rmask[:, None], other=0.0,
                       cache_modifier=".cg") * w[:, None]
        den += gl.load(PML + (first + p) * 2 + 1, mask=rmask, other=0.0, cache_modifier=".cg") * w
    out = num / gl.where(den == 0.0, 1.0, den)[:, None]
    heads = kvh * REP + r
    gl.store(OUT + heads[:, None] * HD + d[None, :], out.to(gl.bfloat16), mask=rmask[:, None] & (d < HD)[None, :])


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
