"""Pruning the cache: least recently used entries first, until an age limit and a size limit hold.

Safe beside a build: only complete entries are removed (a write fills a dot-named temporary
directory and renames it into place), an entry with a write in progress into or over it is
skipped, and an entry is renamed aside before it is deleted, so its name never shows a half-deleted
directory (a reader finds it whole, or missing and rebuilt).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from workbench.cache_entries import CHECKPOINT, DEBUG_ENGINE, ENGINE, TEMPORARY, CacheEntry, list_cache
from workbench.errors import WorkbenchError

DAY_S = 86400.0
STALE_AFTER_S = DAY_S  # a temporary directory untouched this long belongs to a write that died
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_WRITING = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")  # fsutil.atomic_dir's temporary for NAME
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*", re.I)

# why an entry is removed
OLDER, OVER_SIZE, ABANDONED = "older-than", "max-size", "abandoned-write"
# why an entry that matched is kept
BUSY, DEFAULT_KEPT, CHANGED = "being-written", "default-model", "changed-since-listed"


def parse_size(text: str) -> int:
    """Bytes in a size such as 10G, 500M, 1.5T, 64KiB or 4096; units are powers of 1024; ValueError otherwise."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (a number and an optional unit K, M, G or T, like 10G or 500M)")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


@dataclass
class Removal:
    """An entry a prune removes, with what its debug/ holds if it is an engine."""

    entry: CacheEntry
    reason: str  # OLDER, OVER_SIZE or ABANDONED
    freed: int  # bytes: the entry and what its debug/ still holds
    debug_entries: int = 0  # how many entries its debug/ still holds (LRU order usually removed them first)
    done: bool = False  # set once removed (never in a dry run)


@dataclass
class PruneReport:
    """What a prune removed or would remove, what matched but was kept and why, and the sizes around it."""

    removals: list[Removal] = field(default_factory=list)
    kept: list[tuple[CacheEntry, str]] = field(default_factory=list)  # (entry, BUSY | DEFAULT_KEPT | CHANGED)
    total_before: int = 0
    max_bytes: int | None = None
    dry_run: bool = True  # a plan removes nothing until `prune` carries it out

    @property
    def freed(self) -> int:
        """Bytes freed, or that would be freed in a dry run."""
        return sum(r.freed for r in self.removals if r.done or self.dry_run)

    @property
    def total_after(self) -> int:
        """The cache's size after the prune."""
        return self.total_before - self.freed

    @property
    def size_met(self) -> bool:
        """Whether the size limit holds afterwards (True without one)."""
        return self.max_bytes is None or self.total_after <= self.max_bytes


def plan_prune(entries: list[CacheEntry], *, older_than_days: float | None = None, max_bytes: int | None = None,
               keep_checkpoints: bool = False, include_default: bool = False, now: float | None = None) -> PruneReport:
    """Choose what to remove: abandoned writes; entries unused for `older_than_days`; then LRU until `max_bytes`.

    The default model's checkpoint goes only with `include_default`, or last, when `max_bytes` needs it.
    """
    now = time.time() if now is None else now
    report = PruneReport(total_before=sum(e.bytes for e in entries), max_bytes=max_bytes)
    debug_of: dict[str, list[CacheEntry]] = {}
    for e in entries:
        if e.parent is not None:
            debug_of.setdefault(e.parent, []).append(e)
    busy = _being_written(entries, now)
    gone: set[str] = set()
    kept: dict[str, str] = {}

    def remove(e: CacheEntry, reason: str) -> None:
        inside = [d for d in debug_of.get(e.name, []) if d.name not in gone]
        report.removals.append(Removal(e, reason, e.bytes + sum(d.bytes for d in inside), len(inside)))
        gone.update([e.name, *(d.name for d in inside)])

    for e in entries:
        if e.kind == TEMPORARY and e.name not in busy:
            remove(e, ABANDONED)
    kinds = (ENGINE, DEBUG_ENGINE) if keep_checkpoints else (CHECKPOINT, ENGINE, DEBUG_ENGINE)
    candidates = [e for e in entries if e.kind in kinds]
    # an engine counts as used when any of its debug engines was
    used = {e.name: max([e.last_used] + [d.last_used for d in debug_of.get(e.name, [])]) for e in candidates}
    # least recently used first; on a tie a debug engine before its engine; the default model's checkpoint last
    candidates.sort(key=lambda e: (e.default_model, used[e.name], -e.name.count("/"), e.name))
    if older_than_days is not None:
        for e in candidates:
            if e.name in gone or used[e.name] >= now - older_than_days * DAY_S:
                continue
            if e.name in busy or (e.default_model and not include_default):
                kept[e.name] = BUSY if e.name in busy else DEFAULT_KEPT
            else:
                remove(e, OLDER)
    if max_bytes is not None:
        for e in candidates:
            if report.total_before - sum(r.freed for r in report.removals) <= max_bytes:
                break
            if e.name in gone:
                continue
            if e.name in busy:
                kept[e.name] = BUSY
            else:
                kept.pop(e.name, None)
                remove(e, OVER_SIZE)
    by_name = {e.name: e for e in entries}
    report.kept = [(by_name[n], why) for n, why in kept.items() if n not in gone]
    return report


def _being_written(entries: list[CacheEntry], now: float) -> set[str]:
    """Recent temporaries, and the entries they are writing: beside them (a rebuild) or in their debug/."""
    fresh = [e for e in entries if e.kind == TEMPORARY and now - e.last_used < STALE_AFTER_S]
    busy = {e.name for e in fresh}
    for t in fresh:
        m = _WRITING.fullmatch(t.path.name)
        if m:
            busy.add(f"{t.name.rpartition('/')[0]}/{m.group(1)}")
            if t.parent is not None:
                busy.add(t.parent)
    return busy


def prune(root: str | Path | None = None, *, dry_run: bool = False, **limits) -> PruneReport:
    """Plan a prune of the cache (see `plan_prune` for `limits`) and, unless `dry_run`, carry it out."""
    report = plan_prune(list_cache(root), **limits)
    report.dry_run = dry_run
    if not dry_run:
        changed: set[str] = set()
        for r in report.removals:
            # an engine holds its debug engines: one used since the listing keeps it too
            r.done = r.entry.name not in changed and remove_entry(r.entry)
            if not r.done:
                report.kept.append((r.entry, CHANGED))
                changed.add(r.entry.parent or "")
    return report


def remove_entry(entry: CacheEntry) -> bool:
    """Delete an entry unless it changed since it was listed (used, or rebuilt); renamed aside first, atomically."""
    try:
        st = entry.path.lstat()
    except FileNotFoundError:
        return False
    if entry.kind != TEMPORARY and st.st_mtime != entry.last_used:
        return False
    aside = entry.path.with_name(f".{entry.path.name}.{uuid.uuid4().hex[:8]}.pruning")
    try:
        os.rename(entry.path, aside)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise WorkbenchError(f"{entry.path}: cannot remove it ({e.strerror or e})") from None
    shutil.rmtree(aside, ignore_errors=True)  # what is left (permissions) shows as an abandoned write next time
    return True
