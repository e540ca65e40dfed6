"""Paged attention for the generation phase, and the paged KV cache write.

The cache of one layer is PagedKVCache's tensor [num_blocks, 2, page, Hkv, D] (k at index 0
of dim 1, v at 1); sequence b's token i lives in page block_tables[b, i // page] at offset
i % page. One query token per sequence: q [B, Hq, D], seq_lens [B] counting that token
(0 marks a padding row, whose output is zeros).

Work is split flash-decoding style: program (b, kv head, part) reads one partition of the
sequence for all Hq/Hkv query heads of its group (so GQA reads each key once), and a second
kernel merges the partitions' softmax statistics. The number of partitions is fixed per call
(not per sequence), so a CUDA graph captures the same launch for every step.

`paged_decode_attention_rope` starts from the fused qkv projection instead: each program rotates
its query heads itself, and the program whose partition holds the new token rotates its key and
stores key and value in the cache before reading it (rotary.rope_qkv's arithmetic, so the same
bits): the decode step's rope kernel is gone.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from workbench.plugins.common import (dot_in_fp32, gdc, gdc_begin, gdc_trigger, gdc_wait, interpreting, mma, pow2,
                                      rounded)
from workbench.plugins.flash_attention import LOG2E, softmax_step


# A timing probe's switch (WB_PROBE_TRACE=1, bench/block_trace.py): every decode program stamps the global timer at
# its start, after its PDL wait and at its end into TRACES[the cache's address] (int64 [programs, 4])
TRACE = tl.constexpr(os.environ.get("WB_PROBE_TRACE", "0") == "1")
TRACES: dict[int, torch.Tensor] = {}


@triton.jit
def _stamp(TR, event):
    """The probe's trace (TRACE): the global timer (ns) as this program's event (0 start, 1 after the wait, 2 end)."""
    if TRACE:
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
        prog = (tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)) * tl.num_programs(2) + tl.program_id(2)
        tl.store(TR + prog * 4 + event, t)


@triton.jit
def _rotated(x, partner, c, s, first_half):
    """Rotate-half rope of rows x given each element's partner (the other half) and cos/sin, rounded as
    rotary._rotate rounds: x*c and partner*s each to x's dtype, then their difference (first half) or sum."""
    dt: tl.constexpr = x.dtype
    a = rounded(x.to(tl.float32) * c.to(tl.float32), dt)
    b = rounded(partner.to(tl.float32) * s.to(tl.float32), dt)
    return rounded(tl.where(first_half, a - b, a + b), dt).to(dt)


@triton.jit
def _write_new_kv(QKV, KV, c, sn, b, kvh, slot, sqb, s_blk, s_kv, s_pg, s_h, HQ, HKV, D: tl.constexpr,
                  D_PAD: tl.constexpr, PAGE: tl.constexpr):
    """Rotate the new token's key of head kvh (c, sn: its position's cos and sin) and store it and its value at the
    cache slot; both come back (in the cache's dtype)."""
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    half = offs_d < D // 2
    partner = tl.where(half, offs_d + D // 2, offs_d - D // 2)
    row = QKV + b * sqb
    k = tl.load(row + (HQ + kvh) * D + offs_d, mask=dmask, other=0.0)
    kp = tl.load(row + (HQ + kvh) * D + partner, mask=dmask, other=0.0)
    v = tl.load(row + (HQ + HKV + kvh) * D + offs_d, mask=dmask, other=0.0).to(KV.dtype.element_ty)
    k = _rotated(k, kp, c, sn, half).to(KV.dtype.element_ty)
    dst = KV + (slot // PAGE) * s_blk + (slot % PAGE) * s_pg + kvh * s_h + offs_d
    tl.store(dst, k, mask=dmask)
    tl.store(dst + s_kv, v, mask=dmask)
    return k, v


@triton.jit
def _kv_block(KV, table, s, hi, cap, kvh, s_blk, s_kv, s_pg, s_h, offs_d, dmask, PAGE: tl.constexpr,
              BLOCK_N: tl.constexpr):
    """Keys and values of tokens s .. s + BLOCK_N of one kv head, and which of them are real (below hi). The loads
    are bounded by the block table's capacity `cap` (tokens), not by hi: they do not wait for the sequence's
    length, and what they read past it (pages of the table's zero padding) is masked out: values zeroed here,
    keys' scores in _attend."""
    offs_n = s + tl.arange(0, BLOCK_N)
    nmask = offs_n < hi
    inside = offs_n < cap
    page = tl.load(table + offs_n // PAGE, mask=inside, other=0).to(tl.int64)
    row = page * s_blk + (offs_n % PAGE).to(tl.int64) * s_pg + kvh * s_h
    lmask = inside[:, None] & dmask[None, :]
    k = tl.load(KV + row[:, None] + offs_d[None, :], mask=lmask, other=0.0)
    v = tl.load(KV + s_kv + row[:, None] + offs_d[None, :], mask=lmask, other=0.0)
    return k, tl.where(nmask[:, None], v, 0.0), offs_n, nmask


@triton.jit
def _attend(q, k, v, nmask, m_i, l_i, acc, scale_log2, FP32: tl.constexpr):
    """The online softmax's update by one block of keys and values."""
    qk = mma(q, tl.trans(k), FP32) * scale_log2  # [REP_PAD, BLOCK_N]
    acc, m_i, l_i = softmax_step(tl.where(nmask[None, :], qk, float("-inf")), v, m_i, l_i, acc, FP32)
    return m_i, l_i, acc


@triton.jit
def _paged_decode(Q, KV, O, PACC, PML, CNT, TR, block_tables, seq_lens, COS, SIN, POS, SLOTS, sqb, sqh, s_cos, s_blk,
                  s_kv, s_pg, s_h, sbt, cap, sob, soh, scale_log2, window, REP: tl.constexpr, REP_PAD: tl.constexpr,
                  D: tl.constexpr, D_PAD: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr, PART: tl.constexpr,
                  NUM_PARTS: tl.constexpr, WINDOW: tl.constexpr, FP32: tl.constexpr, ROPE: tl.constexpr,
                  MERGE: tl.constexpr, FIRST: tl.constexpr, USE_GDC: tl.constexpr):
    """ROPE: the kernel before (the qkv projection) writes nothing this program reads but the new token's q, k and
    v, so all the rest (the sequence's length, position and slot, its pages, the first block of keys and values,
    the rope table's row) is read before waiting for that kernel; the new token's key and value, written to the
    cache after the wait, replace what the block read at that token (measured neither faster nor slower than
    reading all of it after the wait on an H100: the kernel launches when the projection's last programs finish
    their loops, too late for the early reads to hide much). Without ROPE the new token is already in the cache
    (written by the kernel before): everything waits. FIRST: the next kernel may launch before this one waits (see
    TRIGGER), else after."""
    _stamp(TR, 0)
    if FIRST:
        gdc_trigger(USE_GDC)
    if not ROPE:
        _wait(USE_GDC, FIRST)
        _stamp(TR, 1)
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    part = tl.program_id(2)
    length = tl.load(seq_lens + b).to(tl.int32)
    lo = part * PART
    if WINDOW:
        lo = tl.maximum(lo, length - window)
    hi = tl.minimum(part * PART + PART, length)
    offs_r = tl.arange(0, REP_PAD)
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    table = block_tables + b.to(tl.int64) * sbt
    k, v, offs_n, nmask = _kv_block(KV, table, lo, hi, cap, kvh, s_blk, s_kv, s_pg, s_h, offs_d, dmask, PAGE, BLOCK_N)
    heads = kvh * REP + offs_r
    hmask = offs_r < REP
    qmask = hmask[:, None] & dmask[None, :]
    if ROPE:  # Q is the qkv projection: rotate the query heads; the new token's key and value go to the cache
        pos = tl.load(POS + b).to(tl.int64)
        c = tl.load(COS + pos * s_cos + offs_d, mask=dmask, other=0.0)
        sn = tl.load(SIN + pos * s_cos + offs_d, mask=dmask, other=0.0)
        slot = tl.load(SLOTS + b)
        _wait(USE_GDC, FIRST)
        _stamp(TR, 1)
        half = offs_d < D // 2
        partner = tl.where(half, offs_d + D // 2, offs_d - D // 2)
        q = tl.load(Q + b * sqb + heads[:, None] * sqh + offs_d[None, :], mask=qmask, other=0.0)
        qp = tl.load(Q + b * sqb + heads[:, None] * sqh + partner[None, :], mask=qmask, other=0.0)
        q = _rotated(q, qp, c[None, :], sn[None, :], half[None, :])
        if (slot >= 0) & (lo <= length - 1) & (length - 1 < hi):  # this program reads the new token
            hq = tl.num_programs(1) * REP
            k_new, v_new = _write_new_kv(Q, KV, c, sn, b, kvh, slot, sqb, s_blk, s_kv, s_pg, s_h, hq,
                                         tl.num_programs(1), D, D_PAD, PAGE)
            new = (offs_n == length - 1)[:, None]
            k = tl.where(new, k_new[None, :], k)
            v = tl.where(new, v_new[None, :], v)
            tl.debug_barrier()  # the block's stores are visible to its own loads of later blocks
    else:
        q = tl.load(Q + b * sqb + heads[:, None] * sqh + offs_d[None, :], mask=qmask, other=0.0)
    m_i = tl.full([REP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([REP_PAD], tl.float32)
    acc = tl.zeros([REP_PAD, D_PAD], tl.float32)
    m_i, l_i, acc = _attend(q, k, v, nmask, m_i, l_i, acc, scale_log2, FP32)
    for s in range(lo + BLOCK_N, hi, BLOCK_N):
        k, v, offs_n, nmask = _kv_block(KV, table, s, hi, cap, kvh, s_blk, s_kv, s_pg, s_h, offs_d, dmask, PAGE, BLOCK_N)
        m_i, l_i, acc = _attend(q, k, v, nmask, m_i, l_i, acc, scale_log2, FP32)
    if NUM_PARTS == 1:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + b * sob + heads[:, None] * soh + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=hmask[:, None] & dmask[None, :])
    else:
        # partials laid out [B, Hq, NUM_PARTS, D] and [B, Hq, NUM_PARTS, 2]
        idx = ((b * tl.num_programs(1) * REP + heads) * NUM_PARTS + part).to(tl.int64)
        tl.store(PACC + idx[:, None] * D_PAD + offs_d[None, :], acc, mask=hmask[:, None])
        tl.store(PML + idx * 2, m_i, mask=hmask)
        tl.store(PML + idx * 2 + 1, l_i, mask=hmask)
        if MERGE:  # the last program of (b, kv head) to store its partials merges them all (no kernel of its own)
            tl.debug_barrier()  # every thread's partials stored, before the release below
            cnt = CNT + b * tl.num_programs(1) + kvh
            if tl.atomic_add(cnt, 1, sem="acq_rel", scope="gpu") == NUM_PARTS - 1:
                tl.atomic_xchg(cnt, 0, sem="relaxed", scope="gpu")  # zero again for the next launch
                first = ((b * tl.num_programs(1) * REP + heads) * NUM_PARTS).to(tl.int64)
                out = _merge(PACC, PML, first, hmask, offs_d, REP_PAD, D_PAD, NUM_PARTS)
                tl.store(O + b * sob + heads[:, None] * soh + offs_d[None, :], out.to(O.dtype.element_ty),
                         mask=hmask[:, None] & dmask[None, :])
    _stamp(TR, 2)


@triton.jit
def _wait(USE_GDC: tl.constexpr, FIRST: tl.constexpr):
    """The PDL wait for the kernel before; the trigger of the next after it unless FIRST triggered it already."""
    if FIRST:
        gdc_wait(USE_GDC)
    else:
        gdc_begin(USE_GDC)


@triton.jit
def _merge(PACC, PML, first, hmask, offs_d, REP_PAD: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr):
    """[REP_PAD, D_PAD]: the heads' partitions merged by their softmax statistics, as _paged_reduce merges them
    (partials from other programs: read past L1)."""
    m_max = tl.full([REP_PAD], float("-inf"), tl.float32)
    for p in tl.static_range(NUM_PARTS):
        m_max = tl.maximum(m_max, tl.load(PML + (first + p) * 2, mask=hmask, other=float("-inf"),
                                          cache_modifier=".cg"))
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    num = tl.zeros([REP_PAD, D_PAD], tl.float32)
    den = tl.zeros([REP_PAD], tl.float32)
    for p in tl.static_range(NUM_PARTS):
        w = tl.exp2(tl.load(PML + (first + p) * 2, mask=hmask, other=float("-inf"), cache_modifier=".cg") - m_max)
        num += tl.load(PACC + (first + p)[:, None] * D_PAD + offs_d[None, :], mask=hmask[:, None], other=0.0,
                       cache_modifier=".cg") * w[:, None]
        den += tl.load(PML + (first + p) * 2 + 1, mask=hmask, other=0.0, cache_modifier=".cg") * w
    return num / tl.where(den == 0.0, 1.0, den)[:, None]


@triton.jit
def _paged_reduce(O, PACC, PML, sob, soh, D: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_p = tl.arange(0, NUM_PARTS)
    offs_d = tl.arange(0, D_PAD)
    base = ((b * tl.num_programs(1) + h) * NUM_PARTS + offs_p).to(tl.int64)
    m = tl.load(PML + base * 2)
    l = tl.load(PML + base * 2 + 1)
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp2(m - m_max)  # empty partitions (m = -inf) weigh 0
    acc = tl.load(PACC + base[:, None] * D_PAD + offs_d[None, :])
    num = tl.sum(acc * w[:, None], 0)
    den = tl.sum(l * w, 0)
    out = num / tl.where(den == 0.0, 1.0, den)
    tl.store(O + b * sob + h * soh + offs_d, out.to(O.dtype.element_ty), mask=offs_d < D)


def decode_partitions(max_len: int, batch: int, kv_heads: int, page_size: int, sms: int = 132,
                      head_dim: int = 64) -> tuple[int, int]:
    """(partition size, number of partitions) for sequences of up to max_len tokens: enough programs
    to cover the GPU, partitions of at least min_partition(head_dim) tokens."""
    block = _block_n(page_size)
    if interpreting():
        return max(block, pow2(max_len)), 1
    part = max(min_partition(head_dim), pow2(triton.cdiv(max_len, max(1, (2 * sms) // max(1, batch * kv_heads)))))
    return part, triton.cdiv(max_len, part)  # a partition smaller than a key block reads blocks of its size


# tokens; 64 measured faster than 128 at batch 1 (1B 909 -> 926 tok/s, 8B 180.3 -> 181.7; third session's call 6),
# 32 faster than 64 (1B 945.7 -> 953.9, 8B 182.9 -> 183.6; the kernel alone 3.88 -> 3.63 us, 5.92 -> 5.12) and 16
# (946.1, 183.3; fifth session's call 7, decode_quant_part{64,32,16}_h100.json, attn_sweep_part_h100.json), all
# equal at batch 8. Since the eighth session's merge in the attention's last programs and layer block kernels, heads
# of 128 (the 8B) take 64 again (call 13: bf16 188.8 -> 190.3 tok/s, int8 + logits 336.8 -> 338.1), heads of 64 (the
# 1B) keep 32 (64: bf16 955 -> 950, int8 1541 -> 1512). WB_DECODE_MIN_PART (16 at least) overrides both.
MIN_PARTITION = int(os.environ.get("WB_DECODE_MIN_PART", "0"))


def min_partition(head_dim: int) -> int:
    """The fewest tokens a decode partition takes, by head size (see MIN_PARTITION)."""
    return MIN_PARTITION or (64 if head_dim >= 128 else 32)


# warps of a decode attention program (bench/attn_sweep.py times others; WB_DECODE_WARPS, a probe's switch)
DECODE_WARPS = int(os.environ.get("WB_DECODE_WARPS", "4"))
# software-pipeline stages of its loads (WB_DECODE_STAGES: a probe's switch, bench/run_gpu.sh attn9)
DECODE_STAGES = int(os.environ.get("WB_DECODE_STAGES", "3"))
# How the partitions are merged: by the last program of each (sequence, kv head) to store its partials, counted on a
# device counter (`fused_merge=True`, the default), or by a second kernel (_paged_reduce). Measured on an H100 in
# decode steps (eighth session, call 11): fused, 8B bf16 186.1 -> 188.5 tok/s and int8 329.4 -> 336.5, 1B int8 1476 ->
# 1541 (the layer block kernel after attention), but 1B bf16 955 -> 937 (a GEMV after it), so the engines fuse it
# where a layer block follows (runtime/cuda_program.py). WB_DECODE_MERGE=fused|kernel overrides every call.
MERGE = os.environ.get("WB_DECODE_MERGE", "")
# When the next kernel may launch under PDL: after this kernel's wait for the one before ("wait"), or first thing
# ("first"), so that a layer block after it is launched already when attention ends, and its producer streams
# weights where a block program fits beside attention's (plugins/decode_block.py's MAXNREG). By default "first" where
# the merge is fused at one row, the calls a layer block kernel follows. Tenth session, call 1 (H100, batch 1, tok/s):
# 1B bf16 989.7 -> 1001.2 (with MAXNREG too 1002.2); 8B, both, int8 + logits 340.2 -> 347.6, bf16 188.8 -> 189.4.
# Where GEMVs follow it measured no faster (fourth session's WB_PDL_FIRST, slower at batch 8).
# WB_DECODE_TRIGGER=first|wait overrides every call.
TRIGGER = os.environ.get("WB_DECODE_TRIGGER", "")
_COUNTERS: dict[torch.device, torch.Tensor] = {}


def trigger_first(merged: bool, batch: int) -> bool:
    """Whether the decode kernel lets the next launch before its wait (see TRIGGER): by default where it merges its
    own partitions at one row, as it does where a layer block follows."""
    return {"first": True, "wait": False}.get(TRIGGER, merged and batch == 1)


def _merge_counters(device: torch.device, n: int) -> torch.Tensor | None:
    """Zeroed int32 counters for n (sequence, kv head) pairs, kept per device: every launch leaves them zero, and
    launches on one stream run one after another. None (the merge kernel instead) while a CUDA graph is being
    captured before any exist: they are made outside captures, by the eager steps that precede them."""
    have = _COUNTERS.get(device)
    if have is None or have.numel() < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        _COUNTERS[device] = have = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
    return have


def _block_n(page_size: int) -> int:
    return 16 if interpreting() else max(64, page_size)


def paged_decode_attention(q: torch.Tensor, kv: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                           scale: float, window: int | None = None, *, part: int | None = None,
                           num_parts: int | None = None, out: torch.Tensor | None = None,
                           fused_merge: bool = True) -> torch.Tensor:
    """q [B, Hq, D] over the paged cache kv [blocks, 2, page, Hkv, D] -> [B, Hq, D]."""
    bsz, hq, d = q.shape
    _, two, page, hkv, dk = kv.shape
    if two != 2 or dk != d or hq % hkv:
        raise ValueError(f"paged_decode_attention: q {tuple(q.shape)} does not fit the cache {tuple(kv.shape)}")
    if q.stride(2) != 1 or not kv.is_contiguous() or block_tables.stride(1) != 1:
        raise ValueError("paged_decode_attention: q's head dim, the cache and block table rows must be contiguous")
    return _launch_decode(q, None, kv, block_tables, seq_lens, scale, window, part, num_parts, out,
                          (q.stride(0), q.stride(1)), fused_merge)


def paged_decode_attention_rope(qkv: torch.Tensor, num_heads: int, cos: torch.Tensor, sin: torch.Tensor,
                                positions: torch.Tensor, slots: torch.Tensor, kv: torch.Tensor,
                                block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                                window: int | None = None, *, part: int | None = None, num_parts: int | None = None,
                                out: torch.Tensor | None = None, fused_merge: bool = True) -> torch.Tensor:
    """rotary.rope_qkv (rotate q and k of qkv [B, (Hq + 2 Hkv) D], store k, v at slots [B]; -1: padding) then
    paged_decode_attention, in one kernel."""
    _, two, page, hkv, d = kv.shape
    if two != 2 or qkv.dim() != 2 or qkv.shape[1] != (num_heads + 2 * hkv) * d or qkv.stride(1) != 1 or d % 2:
        raise ValueError(f"paged_decode_attention_rope: qkv {tuple(qkv.shape)} does not fit {num_heads} query heads "
                         f"and the cache {tuple(kv.shape)}")
    q = qkv[:, :num_heads * d].view(qkv.shape[0], num_heads, d)
    return _launch_decode(q, (qkv, cos, sin, positions, slots), kv, block_tables, seq_lens, scale, window, part,
                          num_parts, out, (qkv.stride(0), d), fused_merge)


def _launch_decode(q, rope, kv, block_tables, seq_lens, scale, window, part, num_parts, out, q_strides,
                   fused_merge: bool):
    """The decode kernel (and the partition merge: in its last programs if fused_merge, else a kernel) for q [B, Hq,
    D] or, with rope = (qkv, cos, sin, positions, slots), for the query heads of qkv."""
    bsz, hq, d = q.shape
    _, _, page, hkv, _ = kv.shape
    if part is None or num_parts is None:
        part, num_parts = decode_partitions(block_tables.shape[1] * page, bsz, hkv, page, head_dim=d)
    num_parts = pow2(num_parts)
    out = torch.empty(bsz, hq, d, dtype=q.dtype, device=q.device) if out is None else out
    if bsz == 0:
        return out
    d_pad = pow2(d, 16)
    rep = hq // hkv
    if num_parts > 1:
        pacc = torch.empty(bsz, hq, num_parts, d_pad, dtype=torch.float32, device=q.device)
        pml = torch.empty(bsz, hq, num_parts, 2, dtype=torch.float32, device=q.device)
    else:
        pacc = pml = out  # unused
    block = min(_block_n(page), part)
    interp = interpreting()
    base, cos, sin, positions, slots = rope if rope is not None else (q, out, out, seq_lens, seq_lens)
    fused_merge = {"fused": True, "kernel": False}.get(MERGE, fused_merge)
    counters = _merge_counters(q.device, bsz * hkv) if num_parts > 1 and fused_merge else None
    trace = seq_lens
    if TRACE:
        if kv.data_ptr() not in TRACES:  # made once: a fill in every call would sit between the kernels
            TRACES[kv.data_ptr()] = torch.zeros(bsz * hkv * num_parts, 4, dtype=torch.int64, device=q.device)
        trace = TRACES[kv.data_ptr()]
    _paged_decode[(bsz, hkv, num_parts)](
        base, kv, out, pacc, pml, counters if counters is not None else seq_lens, trace, block_tables, seq_lens, cos,
        sin, positions, slots, q_strides[0], q_strides[1],
        cos.stride(0) if rope is not None else 0, kv.stride(0), kv.stride(1), kv.stride(2), kv.stride(3),
        block_tables.stride(0), block_tables.shape[1] * page, out.stride(0), out.stride(1), scale * LOG2E,
        int(window or 0), REP=rep,
        REP_PAD=pow2(rep, 16), D=d, D_PAD=d_pad, PAGE=page, BLOCK_N=block, PART=part, NUM_PARTS=num_parts,
        WINDOW=bool(window), FP32=dot_in_fp32(q.dtype), ROPE=rope is not None, MERGE=counters is not None,
        FIRST=trigger_first(counters is not None, bsz), num_warps=DECODE_WARPS,
        num_stages=1 if interp else DECODE_STAGES, **gdc("attention"))
    if num_parts > 1 and counters is None:
        _paged_reduce[(bsz, hq)](out, pacc, pml, out.stride(0), out.stride(1), D=d, D_PAD=d_pad, NUM_PARTS=num_parts,
                                 num_warps=4, **gdc("attention"))
    return out


def paged_decode_attention_rope_ref(qkv, num_heads, cos, sin, positions, slots, kv, block_tables, seq_lens, scale,
                                    window=None, **_) -> torch.Tensor:
    """rotary.rope_qkv_ref (storing k, v) then paged_decode_attention_ref."""
    from workbench.plugins.rotary import rope_qkv_ref

    hkv, d = kv.shape[3], kv.shape[4]
    q, _ = rope_qkv_ref(qkv, num_heads, hkv, d, cos, sin, positions, kv, slots)
    return paged_decode_attention_ref(q, kv, block_tables, seq_lens, scale, window)


def paged_decode_attention_ref(q: torch.Tensor, kv: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                               scale: float, window: int | None = None, **_) -> torch.Tensor:
    """The same in fp32 torch: gather each sequence's keys page by page."""
    bsz, hq, d = q.shape
    page, hkv = kv.shape[2], kv.shape[3]
    rep = hq // hkv
    out = torch.zeros_like(q)
    for b in range(bsz):
        n = int(seq_lens[b])
        if n == 0:
            continue
        pos = torch.arange(n, device=q.device)
        blocks = block_tables[b].long()[pos // page]
        keys = kv[blocks, 0, pos % page].float().repeat_interleave(rep, dim=1)  # [n, Hq, D]
        vals = kv[blocks, 1, pos % page].float().repeat_interleave(rep, dim=1)
        scores = torch.einsum("hd,nhd->hn", q[b].float(), keys) * scale
        if window:
            scores[:, : max(0, n - window)] = float("-inf")
        out[b] = torch.einsum("hn,nhd->hd", torch.softmax(scores, -1), vals).to(q.dtype)
    return out


@triton.jit
def _write_kv(K, V, KV, slots, skt, skh, svt, svh, s_blk, s_kv, s_pg, s_h, HKV: tl.constexpr, H_PAD: tl.constexpr,
              D: tl.constexpr, D_PAD: tl.constexpr, PAGE: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    t = tl.program_id(0)
    slot = tl.load(slots + t).to(tl.int64)
    if slot >= 0:
        offs_h = tl.arange(0, H_PAD)
        offs_d = tl.arange(0, D_PAD)
        mask = (offs_h[:, None] < HKV) & (offs_d[None, :] < D)
        dst = KV + (slot // PAGE) * s_blk + (slot % PAGE) * s_pg + offs_h[:, None] * s_h + offs_d[None, :]
        k = tl.load(K + t * skt + offs_h[:, None] * skh + offs_d[None, :], mask=mask)
        v = tl.load(V + t * svt + offs_h[:, None] * svh + offs_d[None, :], mask=mask)
        tl.store(dst, k.to(KV.dtype.element_ty), mask=mask)
        tl.store(dst + s_kv, v.to(KV.dtype.element_ty), mask=mask)


def write_kv(kv: torch.Tensor, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Store k, v [T, Hkv, D] at cache slots [T] (page * page_size + offset; negative: skip)."""
    t, hkv, d = k.shape
    if t == 0:
        return
    _write_kv[(t,)](k, v, kv, slots, k.stride(0), k.stride(1), v.stride(0), v.stride(1), kv.stride(0), kv.stride(1),
                    kv.stride(2), kv.stride(3), HKV=hkv, H_PAD=pow2(hkv), D=d, D_PAD=pow2(d), PAGE=kv.shape[2], **gdc("attention"))


def write_kv_ref(kv: torch.Tensor, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """The same with torch indexing."""
    keep = slots >= 0
    s = slots[keep].long()
    page = kv.shape[2]
    kv[s // page, 0, s % page] = k[keep].to(kv.dtype)
    kv[s // page, 1, s % page] = v[keep].to(kv.dtype)
