"""The engine directory: engine.json (manifest + graph) and weights.safetensors, versioned and hashed."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from workbench.builder.config import BuildConfig
from workbench.builder.network import GraphError, Network
from workbench.errors import EngineFileError, WorkbenchError
from workbench.fsutil import atomic_dir, read_json, sha256_file  # sha256_file is also part of this module's API

FORMAT_VERSION = 1
MANIFEST = "engine.json"
WEIGHTS = "weights.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class Engine:
    """A built network with its weights and everything needed to run and debug it."""

    network: Network
    architecture: str
    model_config: dict
    build_config: BuildConfig
    source: dict = field(default_factory=dict)  # where it was built from: checkpoint path, config hash
    weights_sha256: str = ""
    path: Path | None = None  # set once saved or loaded

    @property
    def marked(self) -> list[str]:
        """Extra outputs beyond the logits."""
        return [o for o in self.network.outputs if o != "logits"]

    @property
    def tokenizer_dir(self) -> Path | None:
        """The tokenizer files copied from the checkpoint, if any."""
        if self.path and (self.path / TOKENIZER_DIR).is_dir():
            return self.path / TOKENIZER_DIR
        return None

    def manifest(self) -> dict:
        """The JSON content of engine.json."""
        return {
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "model_config": self.model_config,
            "build_config": self.build_config.to_dict(),
            "source": self.source,
            "marked_outputs": self.marked,
            "weights_sha256": self.weights_sha256,
            "graph": self.network.to_dict(),
        }


def save_engine(engine: Engine, out_dir: str | Path, *, tokenizer_files: list[Path] = (),
                weights_from: Path | None = None) -> Path:
    """Write the engine directory atomically (a temporary sibling renamed into place).

    `weights_from` reuses an identical weights file (hard link, else copy) instead of
    serialising the tensors again, as debug engines do.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise EngineFileError(f"{out_dir}: exists and is not a directory; refusing to overwrite it")
    if out_dir.exists() and not (out_dir / MANIFEST).is_file() and any(out_dir.iterdir()):
        raise EngineFileError(f"{out_dir}: exists and is not an engine directory; refusing to overwrite it")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EngineFileError(f"{out_dir}: cannot create the engine directory ({e.strerror or e})") from None
    with atomic_dir(out_dir) as tmp:
        weights_path = tmp / WEIGHTS
        if weights_from is not None:
            try:
                os.link(weights_from, weights_path)
            except OSError:
                shutil.copyfile(weights_from, weights_path)
        else:
            tensors = {k: v.contiguous() for k, v in engine.network.weights.items()}
            save_file(tensors, str(weights_path), metadata={"format": "pt"})
        os.chmod(weights_path, tmp.stat().st_mode & 0o666)  # safetensors writes its file as 0o600
        engine.weights_sha256 = sha256_file(weights_path)
        if tokenizer_files:
            (tmp / TOKENIZER_DIR).mkdir()
            for f in tokenizer_files:
                shutil.copy2(f, tmp / TOKENIZER_DIR / Path(f).name)
        (tmp / MANIFEST).write_text(json.dumps(engine.manifest(), indent=1))
    engine.path = out_dir
    return out_dir


def load_engine(path: str | Path, *, verify: bool = True, shared_weights: Engine | None = None) -> Engine:
    """Read an engine directory, checking the format version and (with `verify`) the weights hash.

    `shared_weights`: an engine whose weights file is the same (equal sha256 in both manifests);
    its tensors are reused instead of reading the file again, as debug engines do.
    """
    path = Path(path).absolute()
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise EngineFileError(f"{path}: not an engine directory (no such directory)")
    if not manifest_path.is_file():
        raise EngineFileError(f"{path}: not an engine directory ({MANIFEST} is missing)")
    m = read_json(manifest_path, EngineFileError)
    version = m.get("format_version") if isinstance(m, dict) else None
    if version != FORMAT_VERSION:
        raise EngineFileError(f"{manifest_path}: format version {version!r}, this workbench reads version "
                              f"{FORMAT_VERSION}; rebuild the engine with `wb build`")
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise EngineFileError(f"{weights_path}: missing")
    if verify:
        digest = sha256_file(weights_path)
        if digest != m.get("weights_sha256"):
            raise EngineFileError(f"{weights_path}: sha256 {digest[:12]}... does not match engine.json "
                                  f"({str(m.get('weights_sha256'))[:12]}...); the file is corrupt or was replaced")
    try:
        if shared_weights is not None and shared_weights.weights_sha256 == m.get("weights_sha256"):
            weights = shared_weights.network.weights
        else:
            weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise EngineFileError(f"{weights_path}: unreadable safetensors file ({e})") from None
    try:
        net = Network.from_dict(m["graph"], weights)
        net.validate()
        engine = Engine(network=net, architecture=m["architecture"], model_config=m["model_config"],
                        build_config=BuildConfig.from_dict(m["build_config"]), source=m.get("source", {}),
                        weights_sha256=m["weights_sha256"], path=path)
    except KeyError as e:
        raise EngineFileError(f"{manifest_path}: invalid engine manifest (missing field {e})") from None
    except (TypeError, GraphError, WorkbenchError) as e:
        raise EngineFileError(f"{manifest_path}: invalid engine manifest ({e})") from None
    return engine


def torch_weights(engine: Engine) -> dict[str, torch.Tensor]:
    """The engine's weights by node name."""
    return engine.network.weights
