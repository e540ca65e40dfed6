"""INT8 weight-only (W8A16): per-output-channel symmetric int8 weights, activations stay in the engine dtype."""

from __future__ import annotations

from workbench.builder.network import Network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.rewrite import QuantizedLinear, replace_linears, weight_of


def quantize_weight(w) -> tuple:
    """w [N, K] -> (qweight int8 [N, K], scales f32 [N]): scale = max |w| of the row / 127."""
    scales = nq.safe_scale(w.float().abs().amax(dim=1), nq.INT8_MAX)
    return nq.quantize_int8(w, scales[:, None]), scales


def quantize(net: Network, config: QuantConfig, targets: list[str], calib: Calibration | None = None) -> Network:
    """Replace each target linear by a w8a16 quant_linear."""
    out = {}
    for name in targets:
        q, s = quantize_weight(weight_of(net, name))
        out[name] = QuantizedLinear({"method": "w8a16", "algorithm": "int8_wo"}, {"qweight": q, "scales": s})
    return replace_linears(net, out)
