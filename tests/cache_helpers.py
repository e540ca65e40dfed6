"""Fake cache trees for the cache tests: directories laid out as the cache lays them out, with chosen ages."""

from __future__ import annotations

import os
import time
from pathlib import Path

DAY = 86400.0
KIB = 1024


def put(path: Path, files: dict[str, int], *, age_days: float = 0.0, now: float | None = None) -> Path:
    """Make directory `path` with files of the given sizes (bytes of non-zero data), every mtime `age_days` old."""
    path.mkdir(parents=True, exist_ok=True)
    for name, size in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(b"\x01" * size)
    age(path, age_days, now=now)
    return path


def age(path: Path, days: float, *, now: float | None = None, deep: bool = False) -> None:
    """Set the mtime of `path` (and with `deep`, of everything inside it) to `days` ago."""
    t = (time.time() if now is None else now) - days * DAY
    inside = [Path(top) / n for top, dirs, files in os.walk(path) for n in dirs + files] if deep else []
    for p in [*inside, path]:
        os.utime(p, (t, t), follow_symlinks=False)


def fake_cache(root: Path, now: float) -> Path:
    """A cache with two checkpoints (one the default model), two engines (one with two debug engines), a write."""
    put(root / "checkpoints" / "SmolLM2-135M-Instruct", {"config.json": 100, "model.safetensors": 512 * KIB},
        age_days=60, now=now)
    put(root / "checkpoints" / "tiny-abc", {"config.json": 100, "model.safetensors": 64 * KIB}, age_days=20, now=now)
    old = root / "engines" / "tiny-abc-fp32-111"
    put(old, {"engine.json": 100, "weights.safetensors": 64 * KIB}, age_days=30, now=now)
    new = root / "engines" / "tiny-abc-bf16-222"
    put(new, {"engine.json": 100, "weights.safetensors": 32 * KIB}, now=now)
    for key, days in (("d-old", 10), ("d-new", 1)):
        dbg = new / "debug" / key
        dbg.mkdir(parents=True)
        (dbg / "engine.json").write_bytes(b"\x01" * 100)
        os.link(new / "weights.safetensors", dbg / "weights.safetensors")  # as debug engines share their weights
        age(dbg, days, now=now)
    age(new, 0, now=now)
    return root
