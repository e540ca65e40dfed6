"""Tiny random HF checkpoints made from a config and a seed: how tests and sessions name a model without files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_dir, touch

# architecture -> (transformers config class, model class)
CLASSES = {
    "LlamaForCausalLM": ("LlamaConfig", "LlamaForCausalLM"),
    "MistralForCausalLM": ("MistralConfig", "MistralForCausalLM"),
    "Qwen2ForCausalLM": ("Qwen2Config", "Qwen2ForCausalLM"),
}


def spec_key(spec: dict) -> str:
    """A stable short hash of a tiny-model spec (also its cache directory name)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def validate_spec(spec: dict, where: str) -> None:
    """A WorkbenchError naming `where` unless spec = {architecture, config: {...}, seed: int}."""
    if not isinstance(spec, dict) or spec.get("architecture") not in CLASSES:
        raise WorkbenchError(f"{where}: tiny model needs an architecture, one of {', '.join(CLASSES)}")
    if not isinstance(spec.get("config"), dict) or not isinstance(spec.get("seed"), int):
        raise WorkbenchError(f"{where}: tiny model needs a 'config' object and an integer 'seed'")
    size = spec["config"].get("hidden_size", 0) * spec["config"].get("num_hidden_layers", 0)
    if not isinstance(size, int) or size > 4096 * 4:
        raise WorkbenchError(f"{where}: tiny model is not tiny (hidden_size x layers = {size})")


def random_model(config, seed: int):
    """The HF model `config.architectures[0]` of `config`: seeded random weights, norm scales and biases too; eval."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, config.architectures[0])(config)
    with torch.no_grad():  # HF starts norms at 1 and biases at 0; random ones make a dropped term visible
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model.eval()


def make_tiny_checkpoint(spec: dict, out: Path) -> Path:
    """Write the checkpoint directory of `spec` (seeded random weights, norm scales and biases randomised too)."""
    import transformers

    validate_spec(spec, "tiny model")
    config_cls, model_cls = CLASSES[spec["architecture"]]
    try:
        config = getattr(transformers, config_cls)(**spec["config"])
    except (TypeError, ValueError) as e:
        raise WorkbenchError(f"tiny model config: {e}") from None
    config.architectures = [model_cls]  # what save_pretrained records anyway
    model = random_model(config, spec["seed"])
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
    return out


def tiny_checkpoint(spec: dict) -> Path:
    """The cached checkpoint directory of a tiny-model spec, made on first use."""
    from workbench.default_model import cache_dir

    out = cache_dir() / "checkpoints" / f"tiny-{spec_key(spec)}"
    if (out / "config.json").is_file():
        touch(out)
        return out
    return make_tiny_checkpoint(spec, out)
