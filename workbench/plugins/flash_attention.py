"""Flash attention for the context phase: packed variable-length sequences, causal, GQA/MQA, sliding window.

q [T, Hq, D], k and v [T, Hkv, D] (any strides with a contiguous last dim, e.g. views into the
fused qkv projection), sequence b owning tokens cu_seqlens[b] .. cu_seqlens[b+1]-1, every
sequence starting at position 0. Softmax in fp32 (online, base 2), fp32 accumulation.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from workbench.plugins.common import dot_in_fp32, mma, pow2

LOG2E = 1.4426950408889634


@triton.jit
def _tile(acc, m_i, l_i, q, K, V, start, n, s, offs_m, offs_d, dmask, skt, svt, scale_log2, window,
          MASKED: tl.constexpr, WINDOW: tl.constexpr, BLOCK_N: tl.constexpr, FP32: tl.constexpr):
    offs_n = s + tl.arange(0, BLOCK_N)
    if MASKED:
        kmask = (offs_n[:, None] < n) & dmask[None, :]
        k = tl.load(K + (start + offs_n)[:, None].to(tl.int64) * skt + offs_d[None, :], mask=kmask, other=0.0)
        v = tl.load(V + (start + offs_n)[:, None].to(tl.int64) * svt + offs_d[None, :], mask=kmask, other=0.0)
    else:
        k = tl.load(K + (start + offs_n)[:, None].to(tl.int64) * skt + offs_d[None, :], mask=dmask[None, :], other=0.0)
        v = tl.load(V + (start + offs_n)[:, None].to(tl.int64) * svt + offs_d[None, :], mask=dmask[None, :], other=0.0)
    qk = mma(q, tl.trans(k), FP32) * scale_log2  # [BLOCK_M, BLOCK_N], log2 units
    if MASKED:
        allowed = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < n)
        if WINDOW:
            allowed = allowed & (offs_n[None, :] > offs_m[:, None] - window)
        qk = tl.where(allowed, qk, float("-inf"))
    return softmax_step(qk, v, m_i, l_i, acc, FP32)


@triton.jit
def softmax_step(qk, v, m_i, l_i, acc, FP32: tl.constexpr):
    """The online softmax's update by one block: scores qk [rows, keys] (log2 units, -inf where not allowed) and
    values v [keys, D]; returns (acc, m, l)."""
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing allowed yet
    p = tl.exp2(qk - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, FP32)
    return acc, m_new, l_i


@triton.jit
def _flash_fwd(Q, K, V, O, cu_seqlens, sqt, sqh, skt, skh, svt, svh, sot, soh, scale_log2, window,
               REP: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, WINDOW: tl.constexpr, FP32: tl.constexpr):
    # longest work first: the last query blocks of a causal sequence see the most keys
    m_block = tl.num_programs(0) - 1 - tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    start = tl.load(cu_seqlens + b)
    n = tl.load(cu_seqlens + b + 1) - start
    m0 = m_block * BLOCK_M
    if m0 < n:
        kvh = h // REP
        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D_PAD)
        dmask = offs_d < D
        qmask = (offs_m[:, None] < n) & dmask[None, :]
        q = tl.load(Q + (start + offs_m)[:, None].to(tl.int64) * sqt + h * sqh + offs_d[None, :], mask=qmask, other=0.0)
        Kh = K + kvh * skh
        Vh = V + kvh * svh
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        hi = tl.minimum(n, m0 + BLOCK_M)
        if WINDOW:
            lo = tl.maximum(0, m0 - window + 1) // BLOCK_N * BLOCK_N
            for s in range(lo, hi, BLOCK_N):
                acc, m_i, l_i = _tile(acc, m_i, l_i, q, Kh, Vh, start, n, s, offs_m, offs_d, dmask, skt, svt,
                                      scale_log2, window, True, True, BLOCK_N, FP32)
        else:
            # keys below the query block: no mask needed (BLOCK_M is a multiple of BLOCK_N)
            for s in range(0, m0, BLOCK_N):
                acc, m_i, l_i = _tile(acc, m_i, l_i, q, Kh, Vh, start, n, s, offs_m, offs_d, dmask, skt, svt,
                                      scale_log2, window, False, False, BLOCK_N, FP32)
            for s in range(m0, hi, BLOCK_N):
                acc, m_i, l_i = _tile(acc, m_i, l_i, q, Kh, Vh, start, n, s, offs_m, offs_d, dmask, skt, svt,
                                      scale_log2, window, True, False, BLOCK_N, FP32)
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + (start + offs_m)[:, None].to(tl.int64) * sot + h * soh + offs_d[None, :],
                 out.to(O.dtype.element_ty), mask=qmask)


# (BLOCK_M, BLOCK_N, num_warps, num_stages) by padded head dim, for half-precision inputs; BLOCK_M must be a
# multiple of BLOCK_N (the causal loop reads whole key blocks below the query block unmasked). bench/prefill.py
# times alternatives (it sets CONFIG_OVERRIDE): on an H100 the valid ones were within about 2% of these.
HALF_CONFIGS = {64: (128, 64, 4, 3), 128: (128, 64, 8, 3)}
CONFIG_OVERRIDE: tuple[int, int, int, int] | None = None


def _config(d_pad: int, dtype: torch.dtype, interpret: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    if interpret:
        return 16, 16, 4, 1
    if dtype == torch.float32:
        return 64, 32, 4, 2
    if CONFIG_OVERRIDE is not None:
        return CONFIG_OVERRIDE
    return HALF_CONFIGS[64 if d_pad <= 64 else 128]


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                    scale: float, window: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of packed sequences: q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D] (q's dtype)."""
    from workbench.plugins.common import interpreting

    t, hq, d = q.shape
    hkv = k.shape[1]
    if hq % hkv or k.shape != v.shape or k.shape[2] != d:
        raise ValueError(f"flash_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} are not a GQA triple")
    for x in (q, k, v):
        if x.stride(2) != 1:
            raise ValueError("flash_attention: the head dim must be contiguous")
    out = torch.empty(t, hq, d, dtype=q.dtype, device=q.device) if out is None else out
    if t == 0:
        return out
    d_pad = pow2(d, 16)
    bm, bn, warps, stages = _config(d_pad, q.dtype, interpreting())
    if bm % bn:
        raise ValueError(f"flash_attention: BLOCK_M {bm} must be a multiple of BLOCK_N {bn}")
    batch = cu_seqlens.numel() - 1
    grid = (triton.cdiv(max_seqlen, bm), batch, hq)
    _flash_fwd[grid](q, k, v, out, cu_seqlens, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0),
                     v.stride(1), out.stride(0), out.stride(1), scale * LOG2E, int(window or 0),
                     REP=hq // hkv, D=d, D_PAD=d_pad, BLOCK_M=bm, BLOCK_N=bn, WINDOW=bool(window),
                     FP32=dot_in_fp32(q.dtype), num_warps=warps, num_stages=stages)
    return out


def flash_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                        scale: float, window: int | None = None) -> torch.Tensor:
    """The same function in fp32 torch, one sequence at a time."""
    rep = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        n = e - s
        qi = q[s:e].float().transpose(0, 1)  # [Hq, n, D]
        ki = k[s:e].float().repeat_interleave(rep, dim=1).transpose(0, 1)
        vi = v[s:e].float().repeat_interleave(rep, dim=1).transpose(0, 1)
        scores = qi @ ki.transpose(1, 2) * scale  # [Hq, n, n]
        pos = torch.arange(n, device=q.device)
        allowed = pos[None, :] <= pos[:, None]
        if window:
            allowed &= pos[None, :] > pos[:, None] - window
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        out[s:e] = (probs @ vi).transpose(0, 1).to(q.dtype)
    return out


def default_scale(head_dim: int) -> float:
    """1/sqrt(D)."""
    return 1.0 / math.sqrt(head_dim)
