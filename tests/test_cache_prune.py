"""Pruning: sizes parsed, LRU order, the default model kept, writes in progress left alone, removal by rename."""

from __future__ import annotations

import os
import time

import pytest

from tests.cache_helpers import age, fake_cache, put
from workbench.cache_entries import list_cache
from workbench.cache_prune import (
    ABANDONED, BUSY, CHANGED, DEFAULT_KEPT, OLDER, OVER_SIZE, parse_size, plan_prune, prune, remove_entry,
)
from workbench.fsutil import atomic_dir

DEFAULT = "checkpoints/SmolLM2-135M-Instruct"
BF16, FP32 = "engines/tiny-abc-bf16-222", "engines/tiny-abc-fp32-111"
D_OLD, D_NEW = f"{BF16}/debug/d-old", f"{BF16}/debug/d-new"


@pytest.mark.parametrize("text, expected", [
    ("10G", 10 << 30), ("500M", 500 << 20), ("500m", 500 << 20), ("1.5T", int(1.5 * (1 << 40))),
    ("64KiB", 64 << 10), ("2GB", 2 << 30), ("4096", 4096), ("0", 0), (" 3 M ", 3 << 20), ("100B", 100),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "ten", "-1G", "10X", "1e9", "5 GB extra"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def _plan(root, now, **kw):
    return plan_prune(list_cache(root), now=now, **kw)


def _removed(report):
    return [(r.entry.name, r.reason) for r in report.removals]


def test_older_than_keeps_the_default_model_and_recently_used(tmp_path):
    now = time.time()
    fake_cache(tmp_path, now)
    report = _plan(tmp_path, now, older_than_days=7)
    # oldest first; the bf16 engine stays (used now), its 10-day-old debug engine goes alone
    assert _removed(report) == [(FP32, OLDER), ("checkpoints/tiny-abc", OLDER), (D_OLD, OLDER)]
    assert [(e.name, why) for e, why in report.kept] == [(DEFAULT, DEFAULT_KEPT)]
    with_default = _plan(tmp_path, now, older_than_days=7, include_default=True)
    assert (DEFAULT, OLDER) in _removed(with_default) and with_default.kept == []
    assert _removed(_plan(tmp_path, now, older_than_days=7, keep_checkpoints=True)) == [(FP32, OLDER), (D_OLD, OLDER)]
    assert _removed(_plan(tmp_path, now, older_than_days=100)) == []


def test_max_size_removes_lru_until_it_fits_and_the_default_model_last(tmp_path):
    now = time.time()
    fake_cache(tmp_path, now)
    sizes = {e.name: e.bytes for e in list_cache(tmp_path)}
    total = sum(sizes.values())
    report = _plan(tmp_path, now, max_bytes=total - sizes[FP32])  # the oldest non-default entry is enough
    assert _removed(report) == [(FP32, OVER_SIZE)] and report.size_met
    put(tmp_path / BF16 / "debug" / "half-made", {"weights.safetensors": 10})  # kind other: goes with its engine
    age(tmp_path / BF16, 0, now=now)
    sizes = {e.name: e.bytes for e in list_cache(tmp_path)}
    everything = _plan(tmp_path, now, max_bytes=0)
    assert [n for n, _ in _removed(everything)] == [FP32, "checkpoints/tiny-abc", D_OLD, D_NEW, BF16, DEFAULT]
    engine = next(r for r in everything.removals if r.entry.name == BF16)
    assert engine.debug_entries == 1 and engine.freed == sizes[BF16] + sizes[f"{BF16}/debug/half-made"]
    assert everything.freed == sum(sizes.values()) and everything.total_after == 0
    kept = _plan(tmp_path, now, max_bytes=0, keep_checkpoints=True)
    assert not kept.size_met and all(not n.startswith("checkpoints/") for n, _ in _removed(kept))


def test_debug_use_keeps_its_engine(tmp_path):
    now = time.time()
    fake_cache(tmp_path, now)
    age(tmp_path / BF16, 40, now=now)  # the engine directory is old, but a debug engine of it was used yesterday
    assert BF16 not in [n for n, _ in _removed(_plan(tmp_path, now, older_than_days=7))]


def test_writes_in_progress_are_left_alone(tmp_path):
    now = time.time()
    fake_cache(tmp_path, now)
    # a rebuild of the fp32 engine, and a debug build into the bf16 engine, both under way
    put(tmp_path / "engines" / ".tiny-abc-fp32-111.1a2b3c4d.tmp", {"weights.safetensors": 10}, now=now)
    put(tmp_path / BF16 / "debug" / ".d-x.5e6f7a8b.tmp", {"engine.json": 10}, now=now)
    dead = put(tmp_path / "checkpoints" / ".gone.0a0b0c0d.tmp", {"model.safetensors": 10}, now=now)
    age(dead, 2, now=now, deep=True)  # a conversion that died two days ago
    report = _plan(tmp_path, now, older_than_days=7, max_bytes=0)
    removed = _removed(report)
    assert ("checkpoints/.gone.0a0b0c0d.tmp", ABANDONED) in removed
    names = [n for n, _ in removed]
    assert FP32 not in names and BF16 not in names and not any(".tmp" in n and "gone" not in n for n in names)
    assert D_OLD in names  # its siblings may go: only the entry being written is busy
    assert {e.name for e, why in report.kept if why == BUSY} == {FP32, BF16}


def test_prune_removes_by_rename_and_dry_run_removes_nothing(tmp_path):
    now = time.time()
    fake_cache(tmp_path, now)
    dry = prune(tmp_path, dry_run=True, older_than_days=7, now=now)
    assert dry.freed > 0 and all(e.path.exists() for e in list_cache(tmp_path) if e.name in dict(_removed(dry)))
    before = sum(e.bytes for e in list_cache(tmp_path))
    report = prune(tmp_path, older_than_days=7, now=now)
    assert all(r.done for r in report.removals)
    left = {e.name for e in list_cache(tmp_path)}
    assert left == {DEFAULT, BF16, D_NEW}  # and no renamed-aside directory left behind
    assert sum(e.bytes for e in list_cache(tmp_path)) == before - report.freed


def test_an_entry_used_after_listing_is_not_removed(tmp_path):
    now = time.time()
    fake_cache(tmp_path, now)
    entries = list_cache(tmp_path)
    fp32 = next(e for e in entries if e.name == FP32)
    os.utime(fp32.path)  # a `wb run` used it between the listing and the removal
    assert not remove_entry(fp32) and fp32.path.is_dir()
    fp32 = next(e for e in list_cache(tmp_path) if e.name == FP32)
    assert remove_entry(fp32) and not fp32.path.exists()
    assert not remove_entry(fp32)  # already gone: nothing to do


def test_prune_reports_entries_that_changed(tmp_path, monkeypatch):
    now = time.time()
    fake_cache(tmp_path, now)
    import workbench.cache_prune as cp

    real = cp.plan_prune

    def plan_then_use(entries, **kw):
        report = real(entries, **kw)
        os.utime(tmp_path / FP32)  # used while the prune runs
        return report

    monkeypatch.setattr(cp, "plan_prune", plan_then_use)
    report = prune(tmp_path, older_than_days=7, now=now)
    assert (tmp_path / FP32).is_dir() and any(e.name == FP32 and why == CHANGED for e, why in report.kept)
    assert report.freed == sum(r.freed for r in report.removals if r.entry.name != FP32)

    def plan_then_debug(entries, **kw):
        report = real(entries, **kw)
        os.utime(tmp_path / D_NEW)  # a debug engine used while the prune runs keeps its engine
        return report

    monkeypatch.setattr(cp, "plan_prune", plan_then_debug)
    report = prune(tmp_path, max_bytes=0, now=now)
    assert (tmp_path / D_NEW).is_dir()
    assert {e.name for e, why in report.kept if why == CHANGED} == {D_NEW, BF16}


def test_a_build_still_lands_when_prune_removed_what_it_replaces(tmp_path):
    out = put(tmp_path / "engines" / "e", {"engine.json": 1})
    with atomic_dir(out) as tmp:
        (tmp / "engine.json").write_text("{}")
        remove_entry(next(e for e in list_cache(tmp_path) if e.name == "engines/e"))  # a prune, before the rename
    assert (out / "engine.json").read_text() == "{}"
    assert [p.name for p in (tmp_path / "engines").iterdir()] == ["e"]
