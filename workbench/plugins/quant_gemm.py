"""Quantized GEMMs for the `quant_linear` op on the GPU, each computing what its torch reference in
workbench/runtime/quant_ops.py computes (the arithmetic is specified in
workbench/builder/quantization/numerics.py):

- `w4a16_gemm`, `w8a16_gemm`: Triton kernels. Weights are dequantized in the K loop (int4:
  unpacked from two-per-byte, (q - zero) * scale per group in fp32, rounded to x's dtype;
  int8: exact in any float dtype), multiplied with x in x's dtype with fp32 accumulation;
  the int8 per-channel scale is applied once after the loop.
- `w8a8_gemm`: activations quantized with torch ops (per token or static per tensor), the
  int8 x int8 -> int32 product through `torch._int_mm` (exact: bit for bit the reference),
  the epilogue in fp32 torch ops.
- `fp8_gemm`: activations cast to e4m3 with torch ops, the product through `torch._scaled_mm`
  (fp32 accumulation, per-tensor scales).

`quant_linear` below is the `quant_linear` op of the cuda backend: for a few rows (the decode
step), w8a16 and w4a16 run the GEMV plugin (`plugins.gemv`: the weights streamed once, no
padding to a tile of rows), for more rows the GEMM kernels here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench.builder.quantization import numerics as nq
from workbench.plugins.common import dot_in_fp32, mma, pow2, rounded


@triton.jit
def _wxa16(X, QW, S, Z, SM, B, Y, M, N, K, G, GROUP_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INT4: tl.constexpr, HAS_SMOOTH: tl.constexpr,
           HAS_BIAS: tl.constexpr, FP32: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask = offs_m < M
    nmask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < K
        x = tl.load(X + offs_m[:, None].to(tl.int64) * K + offs_k[None, :], mask=mmask[:, None] & kmask[None, :],
                    other=0.0)
        if HAS_SMOOTH:  # x / smooth in fp32 (IEEE division), rounded back to x's dtype
            sm = tl.load(SM + offs_k, mask=kmask, other=1.0)
            x = rounded(tl.math.div_rn(x.to(tl.float32), sm[None, :]), x.dtype).to(x.dtype)
        wmask = kmask[:, None] & nmask[None, :]
        if INT4:  # a [BLOCK_K, BLOCK_N] tile of (q - zero) * scale, q from two-per-byte storage
            byte = tl.load(QW + offs_n[None, :].to(tl.int64) * (K // 2) + offs_k[:, None] // 2, mask=wmask, other=0)
            q = (byte >> ((offs_k[:, None] % 2) * 4).to(tl.uint8)) & 0xF
            g = offs_k[:, None] // GROUP_SIZE
            s = tl.load(S + offs_n[None, :] * G + g, mask=wmask, other=0.0)
            z = tl.load(Z + offs_n[None, :] * G + g, mask=wmask, other=0).to(tl.float32)
            w = rounded((q.to(tl.float32) - z) * s, x.dtype)
        else:
            w = tl.load(QW + offs_n[None, :].to(tl.int64) * K + offs_k[:, None], mask=wmask, other=0).to(tl.float32)
        acc += mma(x, w.to(x.dtype), FP32)
    if not INT4:  # int8: the per-output-channel scale after the loop
        acc = acc * tl.load(S + offs_n, mask=nmask, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(B + offs_n, mask=nmask, other=0.0).to(tl.float32)[None, :]
    out = rounded(acc, Y.dtype.element_ty).to(Y.dtype.element_ty)  # rounded on the bits: the interpreter truncates
    tl.store(Y + offs_m[:, None].to(tl.int64) * N + offs_n[None, :], out, mask=mmask[:, None] & nmask[None, :])


def _launch(x, qweight, scales, zeros, group_size, smooth, bias, n_out: int, int4: bool) -> torch.Tensor:
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    m, k = x2.shape
    y = torch.empty(m, n_out, dtype=x.dtype, device=x.device)
    block_m, block_n, block_k = min(64, pow2(m, 16)), 64, 64
    grid = (triton.cdiv(m, block_m), triton.cdiv(n_out, block_n))
    dummy = scales
    _wxa16[grid](x2, qweight, scales, zeros if zeros is not None else dummy, smooth if smooth is not None else dummy,
                 bias if bias is not None else dummy, y, m, n_out, k, scales.shape[-1] if int4 else 1,
                 GROUP_SIZE=group_size, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, INT4=int4,
                 HAS_SMOOTH=smooth is not None, HAS_BIAS=bias is not None, FP32=dot_in_fp32(x.dtype))
    return y.reshape(*lead, n_out)


def w4a16_gemm(x, qweight, scales, zeros, group_size: int, smooth=None, bias=None) -> torch.Tensor:
    """x [..., K] @ int4 weights (packed [N, K/2], per-group scales and zeros [N, G]) -> [..., N]."""
    return _launch(x, qweight, scales, zeros, group_size, smooth, bias, qweight.shape[0], True)


def w8a16_gemm(x, qweight, scales, smooth=None, bias=None) -> torch.Tensor:
    """x [..., K] @ int8 weights [N, K] with per-channel scales [N] -> [..., N]."""
    return _launch(x, qweight, scales, None, 1, smooth, bias, qweight.shape[0], False)


def _smoothed(x: torch.Tensor, smooth) -> torch.Tensor:
    xf = x.reshape(-1, x.shape[-1]).to(torch.float32)
    return xf / smooth if smooth is not None else xf


def _pad_rows(t: torch.Tensor, multiple: int, least: int) -> torch.Tensor:
    m = t.shape[0]
    want = max(least, -(-m // multiple) * multiple)
    return t if want == m else torch.cat([t, t.new_zeros(want - m, t.shape[1])])


def w8a8_gemm(x, qweight, scales, act: str = "per_token", act_scale=None, smooth=None, bias=None) -> torch.Tensor:
    """SmoothQuant W8A8: int8 activations x int8 weights [N, K] through torch._int_mm (int32 accumulation)."""
    xf = _smoothed(x, smooth)
    sx = act_scale if act == "per_tensor" else nq.per_token_int8_scale(xf)
    xq = nq.quantize_int8(xf, sx)
    m, (n, k) = xq.shape[0], qweight.shape
    if k % 8 == 0 and n % 8 == 0:  # torch._int_mm's shape rules (CUDA: rows > 16, K and N multiples of 8)
        acc = torch._int_mm(_pad_rows(xq, 8, 24), qweight.t())[:m]
    else:
        acc = nq.int_matmul(xq, qweight)
    y = (acc.to(torch.float32) * sx) * scales
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype).reshape(*x.shape[:-1], n)


def fp8_gemm(x, qweight, scales, act_scale, smooth=None, bias=None) -> torch.Tensor:
    """FP8 E4M3 W8A8 with per-tensor scales through torch._scaled_mm (fp32 accumulation)."""
    xq = nq.quantize_fp8(_smoothed(x, smooth), act_scale)
    m, (n, k) = xq.shape[0], qweight.shape
    if k % 16 == 0 and n % 16 == 0:
        acc = torch._scaled_mm(_pad_rows(xq, 16, 16), qweight.t(), scale_a=act_scale.reshape(()),
                               scale_b=scales.reshape(()), out_dtype=torch.float32)[:m]
    else:
        acc = (xq.to(torch.float32) @ qweight.to(torch.float32).T) * (act_scale * scales)
    if bias is not None:
        acc = acc + bias.to(torch.float32)
    return acc.to(x.dtype).reshape(*x.shape[:-1], n)


GEMV_ROWS = 8  # at most this many rows take the GEMV


def default_gemv_config(method: str, rows: int, n: int, k: int):
    """The GEMV config for a weight-only layer of few rows, None for the GEMM (more rows)."""
    from workbench.plugins.gemv import DEFAULT_QUANT

    return DEFAULT_QUANT if rows <= GEMV_ROWS else None


def quant_linear(node, xs, meta=None, gemv_config=default_gemv_config) -> torch.Tensor:
    """The `quant_linear` op: x and the operands named by the node's `operands` attribute;
    `gemv_config(method, rows, n, k)` picks the GEMV's config for weight-only layers (None: the GEMM)."""
    a = node.attrs
    ops = dict(zip(["x"] + list(a["operands"]), xs))
    x, smooth, bias = ops["x"], ops.get("smooth"), ops.get("bias")
    method = a["method"]
    if method in ("w8a16", "w4a16") and x.dim() == 2:
        cfg = gemv_config(method, x.shape[0], ops["qweight"].shape[0], x.shape[1])
        if cfg is not None:
            from workbench.plugins.gemv import w4a16_gemv, w8a16_gemv

            if smooth is not None:  # as the reference: x / smooth in fp32, rounded to x's dtype
                x = (x.to(torch.float32) / smooth).to(x.dtype)
            if method == "w8a16":
                return w8a16_gemv(x, ops["qweight"], ops["scales"], bias, cfg)
            return w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], a["group_size"], bias, cfg)
    if method == "w4a16":
        return w4a16_gemm(x, ops["qweight"], ops["scales"], ops["zeros"], a["group_size"], smooth, bias)
    if method == "w8a16":
        return w8a16_gemm(x, ops["qweight"], ops["scales"], smooth, bias)
    if method == "w8a8":
        return w8a8_gemm(x, ops["qweight"], ops["scales"], a.get("act", "per_token"), ops.get("act_scale"), smooth, bias)
    if method == "fp8":
        return fp8_gemm(x, ops["qweight"], ops["scales"], ops["act_scale"], smooth, bias)
    raise ValueError(f"quant_linear {node.name}: unknown method {method!r}")


def swiglu_quant_linear(node, xs, gemv_config=default_gemv_config, swiglu_config=None) -> torch.Tensor:
    """silu(gate) * up of a weight-only quantized gate_up projection (the node, its inputs): one GEMV writing the
    activation where `swiglu_config(rows, n, k, method)` gives a config, else the projection then the activation."""
    from workbench.plugins.activation import silu_and_mul

    a = node.attrs
    ops = dict(zip(["x"] + list(a["operands"]), xs))
    x, method = ops["x"], a["method"]
    if swiglu_config is not None and method in ("w8a16", "w4a16") and x.dim() == 2:
        cfg = swiglu_config(x.shape[0], ops["qweight"].shape[0], x.shape[1], method)
        if cfg is not None:
            from workbench.plugins.gemv import w4a16_gemv, w8a16_gemv

            if "smooth" in ops:  # as quant_linear
                x = (x.to(torch.float32) / ops["smooth"]).to(x.dtype)
            if method == "w8a16":
                return w8a16_gemv(x, ops["qweight"], ops["scales"], ops.get("bias"), cfg, swiglu=True)
            return w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], a["group_size"], ops.get("bias"), cfg,
                              swiglu=True)
    return silu_and_mul(quant_linear(node, xs, None, gemv_config))


def quant_linear_ref(node, xs, meta=None) -> torch.Tensor:
    """The torch backend's `quant_linear` (runtime.quant_ops), what every kernel here computes."""
    from workbench.runtime.quant_ops import quant_linear as reference

    return reference(node, xs, meta)
