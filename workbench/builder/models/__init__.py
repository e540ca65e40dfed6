"""Model families by HF architecture name."""

from __future__ import annotations

from pathlib import Path

from workbench.builder.models import llama
from workbench.builder.models.checkpoint import read_config, read_weights
from workbench.errors import ConversionError

# architecture name -> the family module that builds it
FAMILIES = {arch: llama for arch in llama.ARCHITECTURES}


def family_of(cfg: dict, source: str):
    """The family module for an HF config dict, or a ConversionError listing the supported ones."""
    archs = cfg.get("architectures") or []
    if not archs:
        raise ConversionError(f"{source}: no 'architectures' field; supported: {', '.join(FAMILIES)}")
    arch = archs[0]
    if arch not in FAMILIES:
        raise ConversionError(f"{source}: architecture {arch!r} is not supported; supported: {', '.join(FAMILIES)}")
    return FAMILIES[arch]


def load_checkpoint(ckpt_dir: str | Path, progress=None):
    """(family module, config, model with weights loaded) from an HF checkpoint directory."""
    ckpt_dir = Path(ckpt_dir)
    cfg = read_config(ckpt_dir)
    source = str(ckpt_dir / "config.json")
    family = family_of(cfg, source)
    config = family.LlamaConfig.from_hf(cfg, source)
    if progress:
        progress("reading weights", 0, 1)
    hf = read_weights(ckpt_dir)
    if progress:
        progress("converting weights", 0, 1)
    state = family.hf_state_to_engine(config, hf, str(ckpt_dir))
    model = family.LlamaForCausalLM(config)
    model.load_state_dict(state)
    return family, config, model
