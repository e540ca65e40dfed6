"""SiLU-and-multiply of the gated MLP: gate_up [T, 2I] -> silu(gate) * up [T, I], one pass.

Rounds like the reference backend (silu's result is rounded to the activation dtype before
the product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
import triton
import triton.language as tl

from workbench.plugins.common import gdc, gdc_begin, interpreting, rounded


@triton.jit
def _silu_and_mul(GU, O, sg, so, n, BLOCK: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(GU + row * sg + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(GU + row * sg + n + offs, mask=mask, other=0.0)
    a = rounded(g / (1.0 + tl.exp(-g)), GU.dtype.element_ty)
    y = rounded(a * u.to(tl.float32), O.dtype.element_ty)
    tl.store(O + row * so + offs, y.to(O.dtype.element_ty), mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate_up[..., :I]) * gate_up[..., I:]."""
    shape = gate_up.shape
    x = gate_up.reshape(-1, shape[-1])
    if x.stride(-1) != 1:
        x = x.contiguous()
    rows, two_n = x.shape
    n = two_n // 2
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    if rows:
        block = 64 if interpreting() else 1024
        _silu_and_mul[(rows, triton.cdiv(n, block))](x, out, x.stride(0), out.stride(0), n, BLOCK=block, num_warps=4, **gdc("activation"))
    return out.view(*shape[:-1], n)


def silu_and_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """The reference backend's silu then mul."""
    n = gate_up.shape[-1] // 2
    return TF.silu(gate_up[..., :n]) * gate_up[..., n:]
