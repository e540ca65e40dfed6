"""The quantization arithmetic, defined once: the build passes use it to quantize weights and the
reference kernels (workbench/runtime/quant_ops.py) to quantize activations and the KV cache.

These functions are the specification the GPU kernels follow, bit for bit where the math is
integer:

- Rounding is round-half-to-even (`torch.round`), as `rint`/`cvt.rni` on the GPU.
- Quantizing divides by the scale in float32 with IEEE division (torch's `/`; Triton kernels
  use `div_rn`, not the approximate default `/`), then rounds, then saturates.
- int8 is symmetric: scale = amax / 127, values clamp to [-128, 127] (static activation scales
  can see values past the calibrated amax; those saturate).
- fp8 is E4M3 (`torch.float8_e4m3fn`, max 448): x / scale is clamped to [-448, 448] and cast
  (round to nearest even).
- int4 is asymmetric per group of `group_size` input channels: q in [0, 15], w = (q - zero) * scale,
  zero an integer in [0, 15]; group j covers input channels [j*g, (j+1)*g), the last group may
  be shorter (SmolLM2's 576 channels are 4 groups of 128 and one of 64). Two int4 values are packed per uint8 along the input dim: byte j
  of a row holds q[2j] in its low nibble and q[2j + 1] in its high nibble. Zeros are stored one
  per uint8 (not packed: they are 1/group_size of the weights).
- A zero amax gives scale 1 (everything quantizes to 0), never a division by zero.
"""

from __future__ import annotations

import torch

INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8_e4m3fn
INT4_LEVELS = 15  # q in [0, 15]
FP8_DTYPE = torch.float8_e4m3fn


def safe_scale(amax: torch.Tensor, qmax: float) -> torch.Tensor:
    """amax / qmax in float32, with 1 where amax is 0."""
    amax = amax.to(torch.float32)
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def quantize_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """clamp(round(x / scale), -128, 127) as int8; x is upcast to float32 first."""
    return torch.clamp(torch.round(x.to(torch.float32) / scale), -128, 127).to(torch.int8)


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """clamp(x / scale, -448, 448) cast to float8_e4m3fn (round to nearest even)."""
    return torch.clamp(x.to(torch.float32) / scale, -FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def per_token_int8_scale(x: torch.Tensor) -> torch.Tensor:
    """Dynamic per-token scale [..., 1]: max |x| over the last dim / 127 (float32)."""
    return safe_scale(x.to(torch.float32).abs().amax(dim=-1, keepdim=True), INT8_MAX)


def int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 x int8 -> int32 GEMM a [M, K] @ b[N, K]^T.

    Computed in float64: every product is at most 2^14 and every partial sum stays far below
    2^53, so each is exact whatever the summation order, and the result equals the int32
    accumulation of the GPU kernel (torch._int_mm) as long as it does not overflow int32
    (K < 2^17, always true here).
    """
    return (a.to(torch.float64) @ b.to(torch.float64).T).to(torch.int32)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """uint8 values in [0, 15], [..., K] (K even) -> packed uint8 [..., K/2]; low nibble = even index."""
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4: the last dim must be even, got {q.shape[-1]}")
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_int4: packed uint8 [..., K/2] -> uint8 [..., K]."""
    low, high = p & 0x0F, p >> 4
    return torch.stack((low, high), dim=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)


def int4_params(w: torch.Tensor, shrink: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scale and integer zero per row of w [R, G] (one group): ([R], [R]) float32.

    The range always includes 0 (so that 0 is exact), as in GPTQ's quantizer. `shrink` [R], in
    (0, 1], narrows the range first: weights outside it then saturate at 0 or 15 (AWQ's clipping).
    """
    w = w.to(torch.float32)
    wmin = torch.clamp(w.amin(dim=-1), max=0.0)
    wmax = torch.clamp(w.amax(dim=-1), min=0.0)
    if shrink is not None:
        wmin, wmax = wmin * shrink, wmax * shrink
    flat = (wmin == 0) & (wmax == 0)
    wmin, wmax = torch.where(flat, -1.0, wmin), torch.where(flat, 1.0, wmax)
    scale = (wmax - wmin) / INT4_LEVELS
    zero = torch.clamp(torch.round(-wmin / scale), 0, INT4_LEVELS)
    return scale, zero


def int4_group_params(w: torch.Tensor, group_size: int,
                      shrink: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group asymmetric params of w [out, in]: scales, zeros [out, ceil(in/g)] float32 (last group may be short).

    `shrink` [out, ceil(in/g)] narrows each group's range (see int4_params).
    """
    out_f, in_f = w.shape
    full = in_f // group_size
    scale, zero = int4_params(w[:, :full * group_size].reshape(out_f, full, group_size),
                              None if shrink is None else shrink[:, :full])
    if in_f % group_size:
        s_last, z_last = int4_params(w[:, full * group_size:], None if shrink is None else shrink[:, full])
        scale, zero = torch.cat([scale, s_last[:, None]], 1), torch.cat([zero, z_last[:, None]], 1)
    return scale, zero


def expand_groups(params: torch.Tensor, group_size: int, in_f: int) -> torch.Tensor:
    """Per-group params [out, G] -> per input channel [out, in] (float32)."""
    return params.to(torch.float32).repeat_interleave(group_size, dim=1)[:, :in_f]


def quantize_int4_col(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """clamp(round(w / scale) + zero, 0, 15) elementwise (float32 result holding integers)."""
    return torch.clamp(torch.round(w.to(torch.float32) / scale) + zero, 0, INT4_LEVELS)


def quantize_int4(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """w [out, in] with per-group params [out, G] -> q uint8 [out, in] in [0, 15] (not packed)."""
    in_f = w.shape[1]
    return quantize_int4_col(w, expand_groups(scales, group_size, in_f), expand_groups(zeros, group_size, in_f)).to(torch.uint8)


def dequantize_int4(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """(q - zero) * scale in float32, q uint8 [out, in] unpacked."""
    in_f = q.shape[1]
    return (q.to(torch.float32) - expand_groups(zeros, group_size, in_f)) * expand_groups(scales, group_size, in_f)


def fake_int4(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """Round-to-nearest int4 quantize-dequantize of w [out, in] (float32), for searches.

    The same arithmetic as quantize_int4 then dequantize_int4, on [out, groups, g] views
    instead of per-channel copies of the params (it runs in AWQ's inner loop).
    """
    w = w.to(torch.float32)
    out_f, in_f = w.shape
    full = in_f // group_size * group_size
    segments = [w[:, :full].reshape(out_f, -1, group_size)]
    if full < in_f:
        segments.append(w[:, full:].reshape(out_f, 1, -1))
    parts = []
    for seg in segments:
        scale, zero = int4_params(seg)
        s, z = scale[..., None], zero[..., None]
        parts.append(((quantize_int4_col(seg, s, z) - z) * s).reshape(out_f, -1))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
