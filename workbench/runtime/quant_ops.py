"""Reference implementations of the quantized ops: `quant_linear` and the quantized KV cache.

Each function states what the GPU kernel computes; the CPU emulates it exactly where the
kernel's math is integer (W8A8: int8 x int8 -> int32) and up to the summation order of
float32 accumulation elsewhere. Shared arithmetic is in workbench/builder/quantization/numerics.py.

`quant_linear` inputs are x followed by the operands named in its `operands` attribute:

| method | operands | computes |
|---|---|---|
| w8a16 | qweight int8 [N, K], scales f32 [N] | (x @ q^T) * scales |
| w4a16 | qweight uint8 [N, K/2] (packed), scales f32 [N, G], zeros uint8 [N, G], G = ceil(K/g) | x @ ((q - z) * s)^T |
| w8a8 | qweight int8 [N, K], scales f32 [N] or [1], act_scale f32 [1] (static only) | int32(xq @ q^T) * sx * sw |
| fp8 | qweight e4m3 [N, K], scales f32 [1], act_scale f32 [1] | fp32(xq @ q^T) * sx * sw |

Any method may also take `smooth` f32 [K] (x is divided by it first: SmoothQuant's migration
factor, AWQ's activation-aware scale) and `bias` (engine dtype [N], added in float32).
The result is cast to x's dtype.
"""

from __future__ import annotations

import torch

from workbench.builder.network import Node
from workbench.builder.quantization import numerics as nq


def _operands(node: Node, xs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    roles = ["x"] + list(node.attrs["operands"])
    if len(roles) != len(xs):
        raise ValueError(f"quant_linear {node.name}: {len(xs)} inputs for operands {roles}")
    return dict(zip(roles, xs))


def _smoothed(x: torch.Tensor, ops: dict) -> torch.Tensor:
    """x / smooth in float32 (no rounding back to x's dtype: the quantizing kernels consume float32)."""
    xf = x.to(torch.float32)
    return xf / ops["smooth"] if "smooth" in ops else xf


def _finish(acc: torch.Tensor, ops: dict, dtype: torch.dtype) -> torch.Tensor:
    if "bias" in ops:
        acc = acc + ops["bias"].to(torch.float32)
    return acc.to(dtype)


def w8a16(x: torch.Tensor, ops: dict) -> torch.Tensor:
    """INT8 weight-only: the activation-dtype x times int8 weights, fp32 accumulation, per-channel scale after."""
    xa = _smoothed(x, ops).to(x.dtype).to(torch.float32)  # the kernel feeds x in its own dtype to the MMA
    acc = xa @ ops["qweight"].to(torch.float32).T
    return _finish(acc * ops["scales"], ops, x.dtype)


def dequantize_w4(ops: dict, group_size: int) -> torch.Tensor:
    """The float32 weights [N, K] of a w4a16 layer."""
    return nq.dequantize_int4(nq.unpack_int4(ops["qweight"]), ops["scales"], ops["zeros"], group_size)


def w4a16(x: torch.Tensor, ops: dict, group_size: int) -> torch.Tensor:
    """INT4 weight-only: weights dequantized in float32 then rounded to x's dtype, fp32 accumulation."""
    xa = _smoothed(x, ops).to(x.dtype).to(torch.float32)
    w = dequantize_w4(ops, group_size).to(x.dtype).to(torch.float32)
    return _finish(xa @ w.T, ops, x.dtype)


def w8a8(x: torch.Tensor, ops: dict, act: str) -> torch.Tensor:
    """SmoothQuant: int8 activations (static per tensor or dynamic per token) x int8 weights, int32 accumulation."""
    xf = _smoothed(x, ops)  # [M, K] float32
    flat = xf.reshape(-1, xf.shape[-1])
    sx = ops["act_scale"] if act == "per_tensor" else nq.per_token_int8_scale(flat)  # [1] or [M, 1]
    xq = nq.quantize_int8(flat, sx)
    acc = nq.int_matmul(xq, ops["qweight"])  # [M, N] int32
    y = (acc.to(torch.float32) * sx) * ops["scales"]
    return _finish(y, ops, x.dtype).reshape(*x.shape[:-1], -1)


def fp8(x: torch.Tensor, ops: dict) -> torch.Tensor:
    """FP8 E4M3 W8A8 with per-tensor scales (torch._scaled_mm): fp32 accumulation, both scales after."""
    xq = nq.quantize_fp8(_smoothed(x, ops), ops["act_scale"])
    acc = xq.to(torch.float32) @ ops["qweight"].to(torch.float32).T  # e4m3 products are exact in fp32
    return _finish(acc * (ops["act_scale"] * ops["scales"]), ops, x.dtype)


def quant_linear(node: Node, xs, meta):
    """The `quant_linear` op of the torch backend."""
    a = node.attrs
    ops = _operands(node, xs)
    x = ops["x"]
    method = a["method"]
    if method == "w8a16":
        return w8a16(x, ops)
    if method == "w4a16":
        return w4a16(x, ops, a["group_size"])
    if method == "w8a8":
        return w8a8(x, ops, a.get("act", "per_token"))
    if method == "fp8":
        return fp8(x, ops)
    raise ValueError(f"quant_linear {node.name}: unknown method {method!r}")


# -- KV cache ---------------------------------------------------------------------------------
KV_DTYPES = {"int8": torch.int8, "fp8": nq.FP8_DTYPE}


def quantize_kv(x: torch.Tensor, scale: torch.Tensor, kv_dtype: str) -> torch.Tensor:
    """k or v [T, H, D] -> the cache dtype, scale f32 [H] (per head) or [1] (per tensor): quantize on write."""
    s = scale.reshape(1, -1, 1)
    return nq.quantize_int8(x, s) if kv_dtype == "int8" else nq.quantize_fp8(x, s)


def dequantize_kv(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cache values [L, H, D] -> q * scale in float32, cast to the attention dtype: dequantize on read."""
    return (q.to(torch.float32) * scale.reshape(1, -1, 1)).to(dtype)
