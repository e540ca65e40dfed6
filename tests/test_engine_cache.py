"""A real cache: engines and debug engines built into it are listed, touched on use, and pruned safely."""

from __future__ import annotations

import shutil
import time

from tests.cache_helpers import age
from workbench.builder.build import debug_engine
from workbench.builder.config import BuildConfig
from workbench.builder.engine import WEIGHTS
from workbench.cache_entries import CHECKPOINT, DEBUG_ENGINE, ENGINE, list_cache
from workbench.cache_prune import prune
from workbench.engine_cache import cached_engine


def test_cached_engines_listed_touched_and_pruned(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("WB_CACHE", str(tmp_path))
    ckpt = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoints" / "tiny")
    engine = cached_engine(ckpt, BuildConfig())
    dbg = debug_engine(engine, ["1.attn"])
    entries = list_cache()
    assert [e.kind for e in entries] == [CHECKPOINT, ENGINE, DEBUG_ENGINE]
    _, eng, dbg_entry = entries
    assert eng.path == engine.path and dbg_entry.path == dbg.path and dbg_entry.parent == eng.name
    assert eng.bytes >= (engine.path / WEIGHTS).stat().st_size > dbg_entry.bytes  # the weights are hard-linked

    for e in entries:
        age(e.path, 30)
    cached_engine(ckpt, BuildConfig())  # a use: the engine and its checkpoint are touched, not the debug engine
    debug_engine(engine, ["1.attn"])  # now it too
    assert all(time.time() - e.path.stat().st_mtime < 60 for e in entries)

    age(dbg_entry.path, 30)
    report = prune(older_than_days=7)
    assert [r.entry.name for r in report.removals if r.done] == [dbg_entry.name]
    assert not dbg.path.exists() and engine.path.is_dir()
    assert debug_engine(engine, ["1.attn"]).path == dbg.path  # rebuilt on next use

    report = prune(max_bytes=0)
    assert [r.entry.kind for r in report.removals if r.done] == [CHECKPOINT, DEBUG_ENGINE, ENGINE]
    assert list_cache() == [] and list((tmp_path / "engines").iterdir()) == []
