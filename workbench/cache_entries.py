"""What the cache holds: converted checkpoints, built engines and their debug engines, with sizes and last use.

An entry's last use is its directory's mtime. A write leaves it at the time the entry was
finished (the temporary directory is renamed into place), and every use through the cache
sets it to now with `fsutil.touch`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.builder.engine import MANIFEST
from workbench.default_model import NAME as DEFAULT_MODEL
from workbench.default_model import cache_dir

CHECKPOINT, ENGINE, DEBUG_ENGINE = "checkpoint", "engine", "debug engine"
TEMPORARY = "temporary"  # a dot-named directory: a write in progress or one that died (fsutil.atomic_dir)
OTHER = "other"  # anything else (no manifest, a stray file, a symlink): listed, never pruned
CHECKPOINTS, ENGINES, DEBUG = "checkpoints", "engines", "debug"


@dataclass
class CacheEntry:
    """One directory of the cache."""

    kind: str
    name: str  # its path under the cache root, e.g. engines/tiny-fp32-0a1b2c3d4e5f/debug/6a7b8c9d0e1f2a3b
    path: Path
    bytes: int  # disk usage; a debug engine's hard-linked weights count once, in its engine's row
    last_used: float  # seconds since the epoch; for a temporary, the newest change inside it
    parent: str | None = None  # the engine whose debug/ holds it
    default_model: bool = False  # the default model's converted checkpoint: re-creatable, but slowly

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {**asdict(self), "path": str(self.path)}


def list_cache(root: str | Path | None = None) -> list[CacheEntry]:
    """Every entry under checkpoints/ and engines/: checkpoints, then each engine followed by its debug entries."""
    root = Path(root) if root is not None else cache_dir()
    seen: set[tuple[int, int]] = set()  # (device, inode) of files already counted: hard links count once
    entries = []
    for path in _children(root / CHECKPOINTS):
        kind = _kind(path, "config.json", CHECKPOINT)
        entries.append(_entry(root, path, kind, seen, default_model=kind == CHECKPOINT and path.name == DEFAULT_MODEL))
    for path in _children(root / ENGINES):
        kind = _kind(path, MANIFEST, ENGINE)
        debug = path / DEBUG if kind == ENGINE else None
        entries.append(_entry(root, path, kind, seen, skip=debug))  # before its debug engines: it owns the weights
        if debug is not None:
            parent = path.relative_to(root).as_posix()
            for d in _children(debug):
                entries.append(_entry(root, d, _kind(d, MANIFEST, DEBUG_ENGINE), seen, parent=parent))
    return entries


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _kind(path: Path, marker: str, complete: str) -> str:
    if not path.is_dir() or path.is_symlink():
        return OTHER
    if path.name.startswith("."):
        return TEMPORARY
    return complete if (path / marker).is_file() else OTHER


def _entry(root: Path, path: Path, kind: str, seen: set, *, skip: Path | None = None, parent: str | None = None,
           default_model: bool = False) -> CacheEntry:
    size, newest = _usage(path, seen, skip)
    last_used = newest if kind == TEMPORARY else path.lstat().st_mtime
    return CacheEntry(kind=kind, name=path.relative_to(root).as_posix(), path=path, bytes=size, last_used=last_used,
                      parent=parent, default_model=default_model)


def _usage(path: Path, seen: set, skip: Path | None) -> tuple[int, float]:
    """Disk usage of a tree (files seen before not counted again) and its newest mtime; symlinks not followed."""
    st = path.lstat()
    size, newest = _blocks(st), st.st_mtime
    if not path.is_dir() or path.is_symlink():
        return size, newest
    for top, dirs, files in os.walk(path):
        if skip is not None and Path(top) == path:
            dirs[:] = [d for d in dirs if path / d != skip]
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(top, name))
            except FileNotFoundError:  # removed while we walk (a concurrent prune or atomic replace)
                continue
            newest = max(newest, st.st_mtime)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            size += _blocks(st)
    return size, newest


def _blocks(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size
