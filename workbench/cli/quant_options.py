"""The quantization options shared by `wb build`, `wb quant-report` and `wb bisect`."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from workbench.builder.quantization.config import DEFAULT_TARGETS, KV_CACHE_DTYPES, METHODS, QuantConfig
from workbench.errors import WorkbenchError

_OPTIONS = [
    click.option("--quant", "quant_method", type=click.Choice(METHODS), default=None,
                 help="Quantize the decoder's linear layers (default: none)."),
    click.option("--kv-cache-dtype", type=click.Choice(KV_CACHE_DTYPES), default=None,
                 help="Store the KV cache in int8 or fp8 (quantize on write, dequantize on read)."),
    click.option("--kv-scale", type=click.Choice(["per_head", "per_tensor"]), default="per_head", show_default=True,
                 help="KV-cache scale granularity."),
    click.option("--group-size", type=int, default=128, show_default=True, help="int4_wo, gptq, awq: channels per scale."),
    click.option("--sq-alpha", type=float, default=0.5, show_default=True, help="smoothquant: migration strength."),
    click.option("--sq-weights", type=click.Choice(["per_channel", "per_tensor"]), default="per_channel",
                 show_default=True, help="smoothquant: weight scale granularity."),
    click.option("--sq-acts", type=click.Choice(["per_token", "per_tensor"]), default="per_token", show_default=True,
                 help="smoothquant: activation scales, dynamic per token or static per tensor."),
    click.option("--act-order", is_flag=True, help="gptq: quantize columns in decreasing Hessian order."),
    click.option("--gptq-damp", type=float, default=0.01, show_default=True, help="gptq: damping fraction."),
    click.option("--gptq-sequential/--no-gptq-sequential", default=True, show_default=True,
                 help="gptq: calibrate each linear on the outputs of the already-quantized earlier ones "
                      "(off: every Hessian from the full-precision network)."),
    click.option("--awq-clip/--no-awq-clip", default=True, show_default=True,
                 help="awq: after scaling, search how far to shrink each output channel's int4 range per group."),
    click.option("--calib-prompts", multiple=True, help="Calibration prompt (repeatable); default: built-in text."),
    click.option("--calib-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                 help="Calibration text file, cut into --calib-samples pieces of --calib-seq-len tokens."),
    click.option("--calib-samples", type=int, default=16, show_default=True),
    click.option("--calib-seq-len", type=int, default=128, show_default=True),
    click.option("--quant-logits", is_flag=True,
                 help="Quantize the logits layer (LM head) too; with tied embeddings the engine then also keeps a "
                      "quantized copy of the embedding table for it."),
    click.option("--quant-exclude", multiple=True,
                 help="Keep these linears in the engine dtype: layers.0.mlp.down, '*.down', 3-5.attn (repeatable)."),
]
_KEYS = ("quant_method", "kv_cache_dtype", "kv_scale", "group_size", "sq_alpha", "sq_weights", "sq_acts", "act_order",
         "gptq_damp", "gptq_sequential", "awq_clip", "calib_prompts", "calib_file", "calib_samples", "calib_seq_len",
         "quant_logits", "quant_exclude")


def quant_config(quant_method=None, kv_cache_dtype=None, kv_scale="per_head", group_size=128, sq_alpha=0.5,
                 sq_weights="per_channel", sq_acts="per_token", act_order=False, gptq_damp=0.01, gptq_sequential=True,
                 awq_clip=True, calib_prompts=(), calib_file=None, calib_samples=16, calib_seq_len=128,
                 quant_logits=False, quant_exclude=()) -> QuantConfig | None:
    """The QuantConfig of the command-line options, or None when nothing is quantized."""
    if quant_logits and quant_method is None:
        raise WorkbenchError("--quant-logits needs --quant METHOD (it says which layers a method quantizes)")
    if quant_method is None and kv_cache_dtype is None:
        return None
    exclude = [p.strip() for item in quant_exclude for p in item.split(",") if p.strip()]
    targets = list(DEFAULT_TARGETS) + (["logits"] if quant_logits else [])
    return QuantConfig(targets=targets, method=quant_method, kv_cache_dtype=kv_cache_dtype, kv_scale=kv_scale, group_size=group_size,
                       sq_alpha=sq_alpha, sq_weights=sq_weights, sq_acts=sq_acts, act_order=act_order,
                       gptq_damp=gptq_damp, gptq_sequential=gptq_sequential, awq_clip=awq_clip,
                       calib_prompts=list(calib_prompts),
                       calib_file=str(calib_file) if calib_file else None, calib_samples=calib_samples,
                       calib_seq_len=calib_seq_len, exclude=exclude)


def quant_options(fn):
    """Add the quantization options to a command; it receives them as one `quant` argument (QuantConfig or None)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        kwargs["quant"] = quant_config(**{k: kwargs.pop(k) for k in _KEYS})
        return fn(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def quant_line(net) -> str:
    """One line saying what a built network has quantized."""
    from workbench.builder.quantization.summary import summarize_quantization

    s = summarize_quantization(net)
    parts = []
    if s.quantized:
        kinds = ", ".join(f"{algo} ({method})" for algo, method in s.algorithms.items())
        parts.append(f"{len(s.quantized)} linear layers {kinds}")
    if s.full_precision:
        parts.append(f"{len(s.full_precision)} kept in {net.dtype}")
    if s.kv_cache_dtype:
        parts.append(f"KV cache {s.kv_cache_dtype} ({s.kv_scale})")
    return "[green]quantized[/] " + "; ".join(parts) if parts else "nothing quantized"
