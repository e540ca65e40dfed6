"""FP8 E4M3 W8A8 with per-tensor scales: weight scale from max |W|, static activation scale from calibration."""

from __future__ import annotations

import torch

from workbench.builder.network import Network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.rewrite import QuantizedLinear, replace_linears, weight_of


def quantize_layer(w: torch.Tensor, x_amax: float) -> QuantizedLinear:
    """(qweight e4m3 [N, K], scales [1], act_scale [1]) of one linear."""
    scale = nq.safe_scale(w.float().abs().amax().reshape(1), nq.FP8_MAX)
    act_scale = nq.safe_scale(torch.tensor([x_amax]), nq.FP8_MAX)
    return QuantizedLinear({"method": "fp8", "algorithm": "fp8", "act": "per_tensor"},
                           {"qweight": nq.quantize_fp8(w, scale), "scales": scale, "act_scale": act_scale})


def quantize(net: Network, config: QuantConfig, targets: list[str], calib: Calibration) -> Network:
    """Replace each target linear by an fp8 quant_linear."""
    return replace_linears(net, {n: quantize_layer(weight_of(net, n), calib.inputs[n].tensor_amax) for n in targets})
