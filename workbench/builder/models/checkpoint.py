"""Reading an HF checkpoint directory: config.json and (sharded) safetensors, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from workbench.errors import ConversionError
from workbench.fsutil import read_json


def read_config(ckpt_dir: Path) -> dict:
    """config.json as a dict, or a one-line ConversionError naming the file."""
    path = Path(ckpt_dir) / "config.json"
    if not Path(ckpt_dir).is_dir():
        raise ConversionError(f"{ckpt_dir}: not a checkpoint directory")
    if not path.is_file():
        raise ConversionError(f"{path}: not found (a checkpoint directory needs config.json)")
    cfg = read_json(path, ConversionError)
    if not isinstance(cfg, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return cfg


def weight_files(ckpt_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint, following a shard index if there is one."""
    ckpt_dir = Path(ckpt_dir)
    index = ckpt_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConversionError(f"{index}: malformed shard index ({e})") from None
        files = sorted({ckpt_dir / f for f in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise ConversionError(f"{index}: shard {f.name} is missing")
        return files
    files = sorted(ckpt_dir.glob("*.safetensors"))
    if not files:
        if list(ckpt_dir.glob("*.bin")) or list(ckpt_dir.glob("*.pt")):
            raise ConversionError(f"{ckpt_dir}: only pickle weights (*.bin/*.pt) found; they are never loaded, convert them to safetensors")
        raise ConversionError(f"{ckpt_dir}: no *.safetensors weights found")
    return files


def read_weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by its HF key."""
    out: dict[str, torch.Tensor] = {}
    for f in weight_files(ckpt_dir):
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    if key in out:
                        raise ConversionError(f"{f}: key {key!r} also appears in another shard")
                    out[key] = st.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ConversionError(f"{f}: unreadable safetensors file, truncated or corrupt ({e})") from None
    return out
