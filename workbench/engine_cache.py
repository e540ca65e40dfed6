"""Engines built from checkpoints and kept in the cache, keyed by checkpoint, its config and the build config."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from workbench.builder.build import Progress, build_engine
from workbench.builder.config import BuildConfig
from workbench.builder.engine import MANIFEST, Engine, load_engine
from workbench.default_model import cache_dir
from workbench.errors import WorkbenchError
from workbench.fsutil import sha256_file, touch
from workbench.runtime import calibration  # noqa: F401  (quantized builds calibrate through it)


@functools.cache
def builder_fingerprint() -> str:
    """A hash of the builder's source: a changed conversion or pass must not reuse an old cached engine."""
    root = Path(__file__).parent / "builder"
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def engine_cache_dir(checkpoint: Path, config: BuildConfig) -> Path:
    """Where an engine built from `checkpoint` with `config` (by this builder) is cached."""
    ckpt = Path(checkpoint).absolute()
    cfg_hash = sha256_file(ckpt / "config.json")
    parts = f"{ckpt}|{cfg_hash}|{sorted(config.to_dict().items())}|{builder_fingerprint()}"
    key = hashlib.sha256(parts.encode()).hexdigest()[:12]
    return cache_dir() / "engines" / f"{ckpt.name}-{config.dtype}-{key}"


def cached_engine(checkpoint: Path, config: BuildConfig, progress: Progress | None = None) -> Engine:
    """The cached engine for (checkpoint, config), built on first use; a broken cache entry is rebuilt."""
    target = engine_cache_dir(checkpoint, config)
    ckpt = Path(checkpoint).absolute()
    if ckpt.parent == cache_dir().absolute() / "checkpoints":
        touch(ckpt)  # its engines' use keeps a cached checkpoint from looking unused to `wb cache prune`
    if (target / MANIFEST).is_file():
        try:
            engine = load_engine(target)
            touch(target)
            return engine
        except WorkbenchError:
            pass
    return build_engine(checkpoint, target, config, progress=progress)
