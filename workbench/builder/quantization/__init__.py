"""Quantization as build passes: one file per method, each a pure function of the network,
the QuantConfig, the target linears and (where the method needs it) calibration statistics.

`quantize_network` is what the builder calls: it picks the target linears (the decoder's
qkv, o_proj, gate_up and down; embeddings, norms and the LM head stay in the engine dtype),
gathers calibration statistics when needed, and applies the weight method and the KV-cache
quantization. Quantized nodes keep their canonical names (`layers.3.attn.qkv`).

Calibration runs the network through the graph runner the runtime registers (runner.py).
"""

from __future__ import annotations

from pathlib import Path

from workbench.builder.network import Network
from workbench.builder.quantization import awq, fp8, gptq, int4_wo, int8_wo, kv_cache, smoothquant
from workbench.builder.quantization.calibration import Calibration, calibration_ids
from workbench.builder.quantization.config import KV_CACHE_DTYPES, METHODS, QuantConfig
from workbench.builder.quantization.rewrite import restore_linears, select_targets
from workbench.builder.quantization.runner import graph_runner

PASSES = {"int8_wo": int8_wo.quantize, "int4_wo": int4_wo.quantize, "smoothquant": smoothquant.quantize,
          "gptq": gptq.quantize, "awq": awq.quantize, "fp8": fp8.quantize}
AWQ_SAMPLES = 256  # input rows kept per linear for the AWQ grid search

__all__ = ["KV_CACHE_DTYPES", "METHODS", "PASSES", "Calibration", "QuantConfig", "apply_quantization",
           "calibrate_network", "quantize_network", "restore_linears", "select_targets"]


def calibrate_network(net: Network, config: QuantConfig, sequences: list[list[int]], targets: list[str] | None = None,
                      *, source: str = "", all_stats: bool = False) -> Calibration:
    """Run the (unquantized) network on `sequences` and gather what `config`'s passes need.

    `all_stats` also gathers the Hessians and input samples every method could need.
    """
    if targets is None:
        targets = select_targets(net, config.targets, config.exclude)
    one_pass_gptq = config.method == "gptq" and not config.gptq_sequential  # sequential GPTQ makes its own
    return graph_runner().calibrate(net, sequences, targets, kv=config.kv_cache_dtype is not None or all_stats,
                     hessian=one_pass_gptq or all_stats,
                     samples=AWQ_SAMPLES if config.method == "awq" or all_stats else 0, seed=config.seed, source=source)


def apply_quantization(net: Network, config: QuantConfig, calib: Calibration | None = None,
                       targets: list[str] | None = None) -> Network:
    """The quantization passes proper: pure, given the calibration statistics."""
    if targets is None:
        targets = select_targets(net, config.targets, config.exclude)
    if config.method is not None:
        net = PASSES[config.method](net, config, targets, calib)
    if config.kv_cache_dtype is not None:
        net = kv_cache.quantize(net, config, calib)
    return net


def quantize_network(net: Network, config: QuantConfig, *, checkpoint_dir: str | Path | None = None,
                     calib_ids: list[list[int]] | None = None, vocab_size: int | None = None) -> Network:
    """Calibrate if needed (on `calib_ids`, else on text tokenized with the checkpoint's tokenizer), then quantize."""
    if not config.enabled:
        return net
    targets = select_targets(net, config.targets, config.exclude)
    calib = None
    if config.needs_calibration:
        source = "token ids given"
        if calib_ids is None:
            vocab = vocab_size or net.weights["embed.weight"].shape[0]
            calib_ids, source = calibration_ids(config, checkpoint_dir, vocab)
        calib = calibrate_network(net, config, calib_ids, targets, source=source)
    return apply_quantization(net, config, calib, targets)
