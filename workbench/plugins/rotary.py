"""Rotary embedding (rotate-half layout), alone or fused with the qkv split and the KV cache write.

cos/sin come from tables [max_pos, D] built once with the reference backend's own arithmetic
(`rope_table`), so a kernel only gathers rows; the rotation rounds each product and the sum to
the activation dtype as the reference backend does, so results match it bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench.plugins.common import gdc, gdc_begin, pow2, rounded


def rope_table(inv_freq: torch.Tensor, max_pos: int, scaling: float, dtype: torch.dtype,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [max_pos, D] as torch_ops.rope computes them for positions 0..max_pos-1."""
    device = inv_freq.device if device is None else device
    positions = torch.arange(max_pos, device=device)
    freqs = positions[:, None].to(torch.float32) * inv_freq.to(device)[None, :].to(torch.float32)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype).contiguous(), (emb.sin() * scaling).to(dtype).contiguous()


@triton.jit
def _rotate(SRC, DST, s_src_h, s_dst_h, c1, c2, s1, s2, nh, H_PAD: tl.constexpr, HALF: tl.constexpr,
            HALF_PAD: tl.constexpr):
    """Rotate nh heads of one token: src/dst rows of D = 2*HALF elements."""
    offs_h = tl.arange(0, H_PAD)[:, None]
    offs_j = tl.arange(0, HALF_PAD)[None, :]
    mask = (offs_h < nh) & (offs_j < HALF)
    x1 = tl.load(SRC + offs_h * s_src_h + offs_j, mask=mask, other=0.0)
    x2 = tl.load(SRC + offs_h * s_src_h + HALF + offs_j, mask=mask, other=0.0)
    dt: tl.constexpr = x1.dtype
    a1 = rounded(x1.to(tl.float32) * c1.to(tl.float32), dt)
    b1 = rounded(x2.to(tl.float32) * s1.to(tl.float32), dt)
    a2 = rounded(x2.to(tl.float32) * c2.to(tl.float32), dt)
    b2 = rounded(x1.to(tl.float32) * s2.to(tl.float32), dt)
    o1 = rounded(a1 - b1, dt).to(dt)
    o2 = rounded(a2 + b2, dt).to(dt)
    tl.store(DST + offs_h * s_dst_h + offs_j, o1, mask=mask)
    tl.store(DST + offs_h * s_dst_h + HALF + offs_j, o2, mask=mask)
    return o1, o2


@triton.jit
def _cos_sin(COS, SIN, pos, s_cos, HALF: tl.constexpr, HALF_PAD: tl.constexpr):
    offs = tl.arange(0, HALF_PAD)[None, :]
    m = offs < HALF
    base = pos * s_cos
    c1 = tl.load(COS + base + offs, mask=m, other=0.0)
    c2 = tl.load(COS + base + HALF + offs, mask=m, other=0.0)
    s1 = tl.load(SIN + base + offs, mask=m, other=0.0)
    s2 = tl.load(SIN + base + HALF + offs, mask=m, other=0.0)
    return c1, c2, s1, s2


@triton.jit
def _rope(X, Y, COS, SIN, POS, sxt, sxh, syt, syh, s_cos, nh, H_PAD: tl.constexpr, HALF: tl.constexpr,
          HALF_PAD: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(POS + t).to(tl.int64)
    c1, c2, s1, s2 = _cos_sin(COS, SIN, pos, s_cos, HALF, HALF_PAD)
    _rotate(X + t * sxt, Y + t * syt, sxh, syh, c1, c2, s1, s2, nh, H_PAD, HALF, HALF_PAD)


@triton.jit
def _rope_qkv(QKV, QO, KO, COS, SIN, POS, SLOTS, KV, s_qkv, s_qo_t, s_qo_h, s_ko_t, s_ko_h, s_cos,
              s_blk, s_kv, s_pg, s_h, HQ: tl.constexpr, HKV: tl.constexpr, HQ_PAD: tl.constexpr,
              HKV_PAD: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr, PAGE: tl.constexpr,
              WRITE_CACHE: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(POS + t).to(tl.int64)
    c1, c2, s1, s2 = _cos_sin(COS, SIN, pos, s_cos, HALF, HALF_PAD)
    row = QKV + t * s_qkv
    _rotate(row, QO + t * s_qo_t, 2 * HALF, s_qo_h, c1, c2, s1, s2, HQ, HQ_PAD, HALF, HALF_PAD)
    k1, k2 = _rotate(row + HQ * 2 * HALF, KO + t * s_ko_t, 2 * HALF, s_ko_h, c1, c2, s1, s2, HKV, HKV_PAD, HALF,
                     HALF_PAD)
    if WRITE_CACHE:
        slot = tl.load(SLOTS + t).to(tl.int64)
        if slot >= 0:
            offs_h = tl.arange(0, HKV_PAD)[:, None]
            offs_j = tl.arange(0, HALF_PAD)[None, :]
            mask = (offs_h < HKV) & (offs_j < HALF)
            dst = KV + (slot // PAGE) * s_blk + (slot % PAGE) * s_pg + offs_h * s_h + offs_j
            tl.store(dst, k1.to(KV.dtype.element_ty), mask=mask)
            tl.store(dst + HALF, k2.to(KV.dtype.element_ty), mask=mask)
            vsrc = row + (HQ + HKV) * 2 * HALF + offs_h * 2 * HALF + offs_j
            v1 = tl.load(vsrc, mask=mask)
            v2 = tl.load(vsrc + HALF, mask=mask)
            tl.store(dst + s_kv, v1.to(KV.dtype.element_ty), mask=mask)
            tl.store(dst + s_kv + HALF, v2.to(KV.dtype.element_ty), mask=mask)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] rotated at positions [T] (rows of the cos/sin tables [P, D])."""
    t, h, d = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    y = torch.empty(t, h, d, dtype=x.dtype, device=x.device)
    if t:
        _rope[(t,)](x, y, cos, sin, positions, x.stride(0), x.stride(1), y.stride(0), y.stride(1), cos.stride(0), h,
                    H_PAD=pow2(h), HALF=d // 2, HALF_PAD=pow2(d // 2), num_warps=4, **gdc("rope"))
    return y


def rope_qkv(qkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int, cos: torch.Tensor,
             sin: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor | None = None,
             slots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """From the fused projection qkv [T, (Hq + 2 Hkv) D]: rotated q [T, Hq, D] and k [T, Hkv, D];
    with a cache kv [blocks, 2, page, Hkv, D] and slots [T], k and v are also stored there."""
    t = qkv.shape[0]
    if qkv.stride(1) != 1 or qkv.shape[1] != (num_heads + 2 * num_kv_heads) * head_dim:
        raise ValueError(f"rope_qkv: qkv {tuple(qkv.shape)} is not [T, (Hq + 2 Hkv) D] with a contiguous last dim")
    q = torch.empty(t, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty(t, num_kv_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    if t == 0:
        return q, k
    write = kv is not None and slots is not None
    kvt = kv if write else q
    _rope_qkv[(t,)](qkv, q, k, cos, sin, positions, slots if write else positions, kvt, qkv.stride(0), q.stride(0),
                    q.stride(1), k.stride(0), k.stride(1), cos.stride(0),
                    kvt.stride(0) if write else 0, kvt.stride(1) if write else 0, kvt.stride(2) if write else 0,
                    kvt.stride(3) if write else 0, HQ=num_heads, HKV=num_kv_heads, HQ_PAD=pow2(num_heads),
                    HKV_PAD=pow2(num_kv_heads), HALF=head_dim // 2, HALF_PAD=pow2(head_dim // 2),
                    PAGE=kv.shape[2] if write else 1, WRITE_CACHE=write, num_warps=4, **gdc("rope"))
    return q, k


def rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """torch_ops.rope's arithmetic on table rows."""
    c = cos[positions][:, None, :]
    s = sin[positions][:, None, :]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * c + rotated * s


def rope_qkv_ref(qkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int, cos: torch.Tensor,
                 sin: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor | None = None,
                 slots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split, rotate and (optionally) store with torch."""
    from workbench.plugins.paged_attention import write_kv_ref

    hq, hkv, d = num_heads * head_dim, num_kv_heads * head_dim, head_dim
    q = rope_ref(qkv[:, :hq].reshape(-1, num_heads, d), cos, sin, positions)
    k = rope_ref(qkv[:, hq:hq + hkv].reshape(-1, num_kv_heads, d), cos, sin, positions)
    if kv is not None and slots is not None:
        write_kv_ref(kv, slots, k, qkv[:, hq + hkv:].reshape(-1, num_kv_heads, d))
    return q, k
