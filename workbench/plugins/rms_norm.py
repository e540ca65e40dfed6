"""RMSNorm, optionally fused with the residual add before it: s = x + r; y = w * norm(s).

Matches the reference backend's rounding (torch_ops.rms_norm): the sum is rounded to the
activation dtype, the normalised row is rounded before the scale. The sum of squares is taken in
fp64, where the squares of 16-bit values (16 significant bits each) add exactly whatever the order
while the row's magnitudes span less than about 2^13, and to within fp64 rounding beyond: so the
GEMV that fuses this norm into its prologue (plugins/gemv.py, `norm=`) gets the same bits with
another tiling, but for a rare tie in the final rounding to fp32 on rows of extreme range.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench.plugins.common import gdc, gdc_begin, pow2, rounded


@triton.jit
def _add_rms_norm(X, R, W, S, Y, sx, sr, ss, sy, n, eps, BLOCK: tl.constexpr, HAS_RES: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    dt: tl.constexpr = X.dtype.element_ty
    h = tl.load(X + row * sx + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(R + row * sr + offs, mask=mask, other=0.0)
        h = rounded(h + r.to(tl.float32), dt)  # the sum, rounded as torch's add rounds it
        tl.store(S + row * ss + offs, h.to(dt), mask=mask)
    y = normed(h, tl.load(W + offs, mask=mask, other=0.0), rstd(h, n, eps), dt, Y.dtype.element_ty)
    tl.store(Y + row * sy + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def rstd(h, n, eps):
    """1 / sqrt(mean(h^2) + eps) of the fp32 values h (zeros past the row's n), their squares summed in fp64."""
    h64 = h.to(tl.float64)
    var = (tl.sum(h64 * h64) / n).to(tl.float32)
    return 1.0 / tl.sqrt(var + eps)


@triton.jit
def normed(h, w, inv, DT: tl.constexpr, OUT: tl.constexpr):
    """w * (h * inv rounded to DT), rounded to OUT, in fp32: the norm of the row h (fp32 values of DT)."""
    return rounded(w.to(tl.float32) * rounded(h * inv, DT), OUT)


def _launch(x, r, w, eps):
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows, n = x2.shape
    y = torch.empty(rows, n, dtype=torch.promote_types(w.dtype, x.dtype), device=x.device)
    s = None
    if r is not None:
        r2 = r.reshape(-1, n)
        if r2.stride(-1) != 1:
            r2 = r2.contiguous()
        s = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    if rows:
        block = pow2(n)
        warps = min(16, max(1, block // 512))
        _add_rms_norm[(rows,)](x2, r2 if r is not None else x2, w, s if s is not None else x2, y, x2.stride(0),
                               r2.stride(0) if r is not None else 0, s.stride(0) if s is not None else 0, y.stride(0),
                               n, float(eps), BLOCK=block, HAS_RES=r is not None, num_warps=warps, **gdc("norm"))
    return (s.view(shape) if s is not None else None), y.view(shape)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps) over the last dim."""
    return _launch(x, None, weight, eps)[1]


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + residual, rms_norm(x + residual)) in one pass."""
    if x.shape != residual.shape or x.dtype != residual.dtype:
        raise ValueError(f"add_rms_norm: x {tuple(x.shape)} {x.dtype} and residual {tuple(residual.shape)} "
                         f"{residual.dtype} must match")
    return _launch(x, residual, weight, eps)


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference backend's RMSNorm."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def add_rms_norm_ref(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """(x + residual, rms_norm(x + residual)) in torch."""
    s = x + residual
    return s, rms_norm_ref(s, weight, eps)
