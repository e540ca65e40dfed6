"""`wb cache list` and `wb cache prune`: what the cache of checkpoints and engines holds, and trimming it."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
from rich.table import Table

from workbench.cache_entries import OTHER, TEMPORARY, list_cache
from workbench.cache_prune import ABANDONED, BUSY, CHANGED, DEFAULT_KEPT, OLDER, parse_size, prune
from workbench.cli.common import out
from workbench.default_model import cache_dir
from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_write

_RECREATE = "this is the default model: it is converted again from its GGUF file on next use, which is slow"
_KEPT = {BUSY: "being written (a build in progress)", CHANGED: "used or rebuilt since it was listed",
         DEFAULT_KEPT: "the default model, slow to convert again from GGUF; kept unless --include-default, "
                       "or unless --max-size needs it"}


@click.group("cache")
def cache_group():
    """The cache of converted checkpoints and built engines ($WB_CACHE, default ~/.cache/workbench)."""


@cache_group.command("list")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the entries as JSON here.")
def list_command(json_path):
    """List the cache's checkpoints, engines and debug engines with their sizes and last use."""
    root = cache_dir()
    entries = list_cache(root)
    total = sum(e.bytes for e in entries)
    if json_path:
        doc = {"cache": str(root), "total_bytes": total, "entries": [e.to_dict() for e in entries]}
        atomic_write(json_path, json.dumps(doc, indent=1))
    if not entries:
        out.print(f"the cache at {root} is empty")
        return
    table = Table(title=f"cache: {root}", header_style="bold", pad_edge=False)
    table.add_column("kind", no_wrap=True)
    table.add_column("name (under the cache)", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("last used", justify="right", no_wrap=True)
    now = time.time()
    for e in entries:
        name = e.name + (" [dim](default model)[/]" if e.default_model else "")
        table.add_row(("  " if e.parent else "") + e.kind, name, human_size(e.bytes), _ago(e.last_used, now))
    table.add_section()
    table.add_row("total", f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", human_size(total), "")
    out.print(table)
    if any(e.kind in (TEMPORARY, OTHER) for e in entries):
        out.print(f"[dim]{TEMPORARY}: a write in progress, or one that died (pruned once untouched for a day); "
                  f"{OTHER}: not written by workbench as an entry, never pruned[/]")


@cache_group.command("prune")
@click.option("--older-than", "older_than", metavar="DAYS", help="Remove entries unused for more than DAYS days.")
@click.option("--max-size", "max_size", metavar="SIZE",
              help="Then remove the least recently used until the cache fits in SIZE (10G, 500M; powers of 1024).")
@click.option("--keep-checkpoints", is_flag=True, help="Never remove converted checkpoints.")
@click.option("--include-default", is_flag=True,
              help="Let --older-than remove the default model's checkpoint too (--max-size may anyway, last).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def prune_command(older_than, max_size, keep_checkpoints, include_default, dry_run):
    """Remove least recently used cache entries until --older-than and --max-size hold.

    Writes abandoned for over a day go too; an entry being written is never removed.
    """
    days = _days(older_than) if older_than is not None else None
    max_bytes = _size(max_size) if max_size is not None else None
    if days is None and max_bytes is None:
        raise WorkbenchError("wb cache prune: give --older-than DAYS, --max-size SIZE or both")
    root = cache_dir()
    report = prune(root, dry_run=dry_run, older_than_days=days, max_bytes=max_bytes,
                   keep_checkpoints=keep_checkpoints, include_default=include_default)
    verb = "would remove" if dry_run else "removed"
    now = time.time()
    for r in report.removals:
        if not (r.done or dry_run):
            continue
        why = {OLDER: f"unused for more than {older_than} days", ABANDONED: "abandoned write"}.get(
            r.reason, f"over --max-size {max_size}")
        e = r.entry
        inside = f" and {r.debug_entries} more under its debug/" if r.debug_entries else ""
        out.print(f"{verb} {e.kind} {e.name}{inside}: {human_size(r.freed)}, "
                  f"last used {_ago(e.last_used, now)} ({why})")
        if e.default_model:
            out.print(f"  [yellow]note: {_RECREATE}[/]")
    for e, why in report.kept:
        out.print(f"kept {e.kind} {e.name} ({human_size(e.bytes)}): {_KEPT[why]}")
    freed = "would free" if dry_run else "freed"
    out.print(f"{freed} {human_size(report.freed)}: the cache at {root} {'would hold' if dry_run else 'holds'} "
              f"{human_size(report.total_after)} (was {human_size(report.total_before)})")
    if not report.size_met:
        rest = "checkpoints (--keep-checkpoints), " if keep_checkpoints else ""
        out.print(f"[yellow]still {human_size(report.total_after - report.max_bytes)} over --max-size {max_size}: "
                  f"the rest is {rest}being written, or not an entry prune removes (kind other)[/]")


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise WorkbenchError(f"--older-than {text!r}: not a number of days") from None
    if not math.isfinite(days) or days < 0:
        raise WorkbenchError(f"--older-than {text}: must be 0 or more days")
    return days


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise WorkbenchError(f"--max-size: {e}") from None


def human_size(n: int) -> str:
    """Bytes in binary units: 812 B, 4.0 KiB, 12.3 MiB, 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _ago(t: float, now: float) -> str:
    ago = max(0.0, now - t)
    if ago >= 86400:
        return f"{ago / 86400:.0f} d ago"
    return f"{ago / 3600:.0f} h ago" if ago >= 3600 else f"{ago / 60:.0f} min ago"


COMMANDS = [cache_group]
