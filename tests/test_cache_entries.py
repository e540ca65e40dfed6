"""Listing the cache: kinds, sizes on disk with shared weights counted once, last use, and touches on use."""

from __future__ import annotations

import os
import time

from tests.cache_helpers import DAY, KIB, age, fake_cache, put
from workbench.cache_entries import CHECKPOINT, DEBUG_ENGINE, ENGINE, OTHER, TEMPORARY, list_cache
from workbench.fsutil import touch


def test_kinds_order_and_parents(tmp_path):
    now = time.time()
    fake_cache(tmp_path, now)
    entries = list_cache(tmp_path)
    assert [(e.kind, e.name, e.parent) for e in entries] == [
        (CHECKPOINT, "checkpoints/SmolLM2-135M-Instruct", None),
        (CHECKPOINT, "checkpoints/tiny-abc", None),
        (ENGINE, "engines/tiny-abc-bf16-222", None),
        (DEBUG_ENGINE, "engines/tiny-abc-bf16-222/debug/d-new", "engines/tiny-abc-bf16-222"),
        (DEBUG_ENGINE, "engines/tiny-abc-bf16-222/debug/d-old", "engines/tiny-abc-bf16-222"),
        (ENGINE, "engines/tiny-abc-fp32-111", None),
    ]
    assert [e.default_model for e in entries] == [True] + [False] * 5
    by_name = {e.name: e for e in entries}
    assert abs(by_name["engines/tiny-abc-fp32-111"].last_used - (now - 30 * DAY)) < 1
    assert abs(by_name["engines/tiny-abc-bf16-222/debug/d-old"].last_used - (now - 10 * DAY)) < 1


def test_sizes_count_hard_linked_weights_once(tmp_path):
    fake_cache(tmp_path, time.time())
    by_name = {e.name: e for e in list_cache(tmp_path)}
    engine = by_name["engines/tiny-abc-bf16-222"]
    debug = by_name["engines/tiny-abc-bf16-222/debug/d-new"]
    assert 32 * KIB <= engine.bytes < 48 * KIB  # its weights, manifest and directory, not its debug engines
    assert debug.bytes < 16 * KIB  # the manifest and directory: the weights are its engine's
    assert 512 * KIB <= by_name["checkpoints/SmolLM2-135M-Instruct"].bytes < 528 * KIB
    # a copied (not linked) weights file is the debug engine's own
    os.unlink(debug.path / "weights.safetensors")
    (debug.path / "weights.safetensors").write_bytes(b"\x01" * 32 * KIB)
    assert {e.name: e for e in list_cache(tmp_path)}[debug.name].bytes >= 32 * KIB


def test_temporaries_and_others(tmp_path):
    now = time.time()
    tmp = put(tmp_path / "engines" / ".x-fp32-1.1a2b3c4d.tmp", {"weights.safetensors": 4 * KIB}, now=now)
    age(tmp, 3, now=now, deep=True)
    os.utime(tmp / "weights.safetensors")  # still being written: its newest file is what counts
    put(tmp_path / "engines" / "half-made", {"weights.safetensors": 10})  # no manifest
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "stray.txt").write_text("x")
    os.symlink(tmp_path / "engines" / "half-made", tmp_path / "checkpoints" / "linked")
    entries = {e.name: e for e in list_cache(tmp_path)}
    assert entries[f"engines/{tmp.name}"].kind == TEMPORARY
    assert entries[f"engines/{tmp.name}"].last_used > now - 60
    assert {entries[n].kind for n in ("engines/half-made", "checkpoints/stray.txt", "checkpoints/linked")} == {OTHER}


def test_missing_or_empty_cache(tmp_path):
    assert list_cache(tmp_path / "nothing-here") == []
    (tmp_path / "engines").mkdir()
    assert list_cache(tmp_path) == []


def test_touch_marks_use_and_ignores_what_it_cannot(tmp_path):
    put(tmp_path / "e", {"engine.json": 1}, age_days=5)
    touch(tmp_path / "e")
    assert time.time() - (tmp_path / "e").stat().st_mtime < 60
    touch(tmp_path / "missing")  # no error: a cache it cannot write is used as it is
