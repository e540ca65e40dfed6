"""Engines built from checkpoints and kept in the cache, keyed by checkpoint, its config and the build config."""

from __future__ import annotations

import hashlib
from pathlib import Path

from workbench.builder.build import Progress, build_engine
from workbench.builder.config import BuildConfig
from workbench.builder.engine import MANIFEST, Engine, load_engine
from workbench.default_model import cache_dir
from workbench.errors import WorkbenchError


def engine_cache_dir(checkpoint: Path, config: BuildConfig) -> Path:
    """Where an engine built from `checkpoint` with `config` is cached."""
    ckpt = Path(checkpoint).absolute()
    cfg_hash = hashlib.sha256((ckpt / "config.json").read_bytes()).hexdigest()
    key = hashlib.sha256(f"{ckpt}|{cfg_hash}|{sorted(config.to_dict().items())}".encode()).hexdigest()[:12]
    return cache_dir() / "engines" / f"{ckpt.name}-{config.dtype}-{key}"


def cached_engine(checkpoint: Path, config: BuildConfig, progress: Progress | None = None) -> Engine:
    """The cached engine for (checkpoint, config), built on first use; a broken cache entry is rebuilt."""
    target = engine_cache_dir(checkpoint, config)
    if (target / MANIFEST).is_file():
        try:
            return load_engine(target)
        except WorkbenchError:
            pass
    return build_engine(checkpoint, target, config, progress=progress)
