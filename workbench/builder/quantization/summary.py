"""What a built network has quantized, as data."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.builder.network import Network


@dataclass
class QuantSummary:
    """Quantized and full-precision linears, the algorithms used, the KV-cache dtype."""

    quantized: list[str] = field(default_factory=list)
    full_precision: list[str] = field(default_factory=list)  # linears left in the engine dtype (LM head included)
    algorithms: dict[str, str] = field(default_factory=dict)  # algorithm -> kernel method (gptq -> w4a16)
    kv_cache_dtype: str | None = None
    kv_scale: str | None = None
    weight_bytes: int = 0


def summarize_quantization(net: Network) -> QuantSummary:
    """Summarise the quantization of `net`."""
    s = QuantSummary(weight_bytes=sum(w.numel() * w.element_size() for w in net.weights.values()))
    for node in net.nodes.values():
        if node.op == "quant_linear":
            s.quantized.append(node.name)
            s.algorithms[node.attrs.get("algorithm", node.attrs["method"])] = node.attrs["method"]
        elif node.op == "linear":
            s.full_precision.append(node.name)
        elif node.op == "attention" and node.attrs.get("kv_cache_dtype"):
            s.kv_cache_dtype, s.kv_scale = node.attrs["kv_cache_dtype"], node.attrs.get("kv_scale")
    return s
