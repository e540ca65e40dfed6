"""INT8 / FP8 KV cache: each attention quantizes k and v on write and dequantizes on read.

The attention node gets `kv_cache_dtype` and two more inputs, `<attention>.k_scale` and
`<attention>.v_scale` (float32, [Hkv] per head or [1] per tensor): scale = calibrated max |k|
(|v|) / 127 for int8, / 448 for fp8. The runtime then allocates the cache in int8 or
float8_e4m3fn, halving (fp16) or quartering (fp32) its memory.
"""

from __future__ import annotations

import torch

from workbench.builder.network import Network, Node
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.errors import WorkbenchError


def kv_scales(k_amax: torch.Tensor, v_amax: torch.Tensor, config: QuantConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(k_scale, v_scale) float32, [Hkv] or [1]."""
    qmax = nq.INT8_MAX if config.kv_cache_dtype == "int8" else nq.FP8_MAX
    if config.kv_scale == "per_tensor":
        k_amax, v_amax = k_amax.amax().reshape(1), v_amax.amax().reshape(1)
    return nq.safe_scale(k_amax, qmax), nq.safe_scale(v_amax, qmax)


def quantize(net: Network, config: QuantConfig, calib: Calibration) -> Network:
    """Give every attention node a quantized KV cache with calibrated scales."""
    out = net.copy()
    nodes: dict[str, Node] = {}
    for name, node in out.nodes.items():
        if node.op != "attention":
            nodes[name] = node
            continue
        if len(node.inputs) != 3:
            raise WorkbenchError(f"{name}: the KV cache is already quantized")
        stats = calib.kv[name]
        inputs = list(node.inputs)
        for role, value in zip(("k_scale", "v_scale"), kv_scales(stats.k_amax, stats.v_amax, config)):
            pname = f"{name}.{role}"
            nodes[pname] = Node(pname, "param", [], {}, "float32", list(value.shape))
            out.weights[pname] = value
            inputs.append(pname)
        nodes[name] = Node(name, "attention", inputs, {**node.attrs, "kv_cache_dtype": config.kv_cache_dtype,
                                                       "kv_scale": config.kv_scale}, node.dtype, list(node.shape))
    out.nodes = nodes
    return out
