"""SmoothQuant W8A8: migrate activation outliers into the weights, then int8 weights and activations.

Per input channel j, s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha); the weights become W * s
and the activations x / s. The division is done by the kernel (a `smooth` operand) rather than
folded into the preceding norm, so every canonical tensor (`layers.i.input_norm`, ...) keeps its
value and `wb diff` compares like with like. Weights: int8 per output channel or per tensor.
Activations: int8 per token (dynamic, computed by the kernel) or per tensor (static, calibrated).
"""

from __future__ import annotations

import torch

from workbench.builder.network import Network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.rewrite import QuantizedLinear, replace_linears, weight_of


def smoothing_factors(x_amax: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    """s [K] = max|x|^alpha / max|W col|^(1-alpha), clamped away from 0."""
    w_amax = w.float().abs().amax(dim=0).clamp(min=1e-5)
    s = x_amax.float().clamp(min=1e-5).pow(alpha) / w_amax.pow(1.0 - alpha)
    return s.clamp(min=1e-5)


def quantize_layer(w: torch.Tensor, x_amax: torch.Tensor, config: QuantConfig) -> QuantizedLinear:
    """One linear's w8a8 operands from its weight and its input's per-channel max |x|."""
    s = smoothing_factors(x_amax, w, config.sq_alpha)
    ws = w.float() * s[None, :]
    if config.sq_weights == "per_channel":
        scales = nq.safe_scale(ws.abs().amax(dim=1), nq.INT8_MAX)  # [N]
        q = nq.quantize_int8(ws, scales[:, None])
    else:
        scales = nq.safe_scale(ws.abs().amax().reshape(1), nq.INT8_MAX)  # [1]
        q = nq.quantize_int8(ws, scales)
    ops = {"qweight": q, "scales": scales, "smooth": s}
    if config.sq_acts == "per_tensor":
        ops["act_scale"] = nq.safe_scale((x_amax.float() / s).amax().reshape(1), nq.INT8_MAX)
    attrs = {"method": "w8a8", "algorithm": "smoothquant", "act": config.sq_acts, "weights": config.sq_weights,
             "alpha": config.sq_alpha}
    return QuantizedLinear(attrs, ops)


def quantize(net: Network, config: QuantConfig, targets: list[str], calib: Calibration) -> Network:
    """Replace each target linear by a w8a8 quant_linear with smoothing factors from calibration."""
    return replace_linears(net, {n: quantize_layer(weight_of(net, n), calib.inputs[n].amax, config) for n in targets})
