"""The HF transformers model an engine was built from: its checkpoint, its canonical name map, and one loader.

`Baseline` (the diff's HF side) and `hf_profile` (the profile's HF timings) both load the
model here, so both fail with the same messages when the checkpoint is gone or unreadable.
"""

from __future__ import annotations

from pathlib import Path

import torch

from workbench.builder.engine import Engine
from workbench.builder.models import FAMILIES
from workbench.builder.models.base import HFCapture
from workbench.builder.network import torch_dtype
from workbench.errors import WorkbenchError

ATTN_IMPLEMENTATION = "eager"  # HF's plain attention: the torch backend's op order, and DESIGN.md's baseline numbers


def source_checkpoint(engine: Engine, checkpoint: str | Path | None = None) -> Path:
    """The HF checkpoint directory the engine was built from (or `checkpoint`); a WorkbenchError when it is missing."""
    ckpt = Path(checkpoint) if checkpoint is not None else Path(engine.source.get("checkpoint") or "")
    if checkpoint is None and not engine.source.get("checkpoint"):
        raise WorkbenchError(f"{engine.path}: the engine does not record the checkpoint it was built from")
    if not ckpt.is_dir() or not (ckpt / "config.json").is_file():
        what = "is gone" if not ckpt.exists() else "has no config.json"
        raise WorkbenchError(f"{ckpt}: the HF checkpoint the engine was built from {what}")
    return ckpt


def engine_name_map(engine: Engine) -> dict[str, HFCapture]:
    """The engine family's canonical name -> HF module table, for the engine's model config."""
    family = FAMILIES.get(engine.architecture)
    if family is None:
        raise WorkbenchError(f"engine architecture {engine.architecture!r} has no HF name map; "
                             f"supported: {', '.join(FAMILIES)}")
    return family.hf_name_map(family.LlamaConfig.from_dict(engine.model_config))


def load_hf_model(checkpoint: str | Path, dtype: str, device: str | torch.device = "cpu"):
    """The HF causal LM of a checkpoint directory in `dtype` on `device`: eager attention, eval mode, quietly."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the library never writes to the terminal
    try:
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch_dtype(dtype),
                                                     attn_implementation=ATTN_IMPLEMENTATION)
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"{checkpoint}: transformers cannot load the baseline model ({e})") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return model.to(device).eval()
