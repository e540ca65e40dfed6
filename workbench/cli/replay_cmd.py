"""`wb replay`: rerun saved sessions and report what regressed or moved (for CI)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from workbench.cli.common import console, out
from workbench.fsutil import atomic_write
from workbench.inspect.replay import EXPECTED_FAIL, FIXED, NOT_COMPARED, REGRESSION, junit_xml, replay
from workbench.runtime.backends import BACKEND_NAMES

_STYLE = {REGRESSION: "bold red", FIXED: "green", EXPECTED_FAIL: "yellow", NOT_COMPARED: "dim"}


@click.command("replay")
@click.argument("sessions", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--junit", "junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option("--update", is_flag=True, help="Accept the new results: rewrite each session with them.")
@click.option("--device", default=None, help="cpu or cuda (default: where it was recorded, if available here).")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None,
              help="torch or cuda (default: the one it was recorded with, if it runs here).")
def replay_command(sessions, junit, update, device, backend):
    """Rebuild and rerun SESSIONS (.wbs files); exit 1 if any name regressed."""
    results = []
    for path in sessions:
        with console.status(f"replaying {path} ...") as status:
            result = replay(path, device=device, backend=backend, update=update,
                            progress=lambda m: status.update(f"{path}: {m}"))
        results.append(result)
        _render(result)
    if junit:
        atomic_write(junit, junit_xml(results))
    failed = sum(not r.passed for r in results)
    out.print(f"replay: {len(results) - failed} passed, {failed} failed")
    raise SystemExit(1 if failed else 0)


def _render(result) -> None:
    mark = "[green]ok[/]" if result.passed else "[bold red]REGRESSED[/]"
    counts = {}
    for o in result.outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    out.print(f"{mark} {result.path} ({result.title or 'untitled'}): {summary}; {result.seconds:.1f} s")
    for note in result.notes:
        out.print(f"  [dim]note: {note}[/]")
    shown = [o for o in result.outcomes if o.status in (REGRESSION, FIXED) or o.moved]
    if not shown:
        return
    table = Table(show_header=True, header_style="bold", pad_edge=False)
    for col in ("mode", "step", "name", "status", "what moved / why"):
        table.add_column(col)
    for o in shown:
        why = "; ".join(o.moved + ([o.reason] if o.status == REGRESSION else []))
        table.add_row(o.mode, str(o.step), o.name, Text(o.status, style=_STYLE.get(o.status, "")), why)
    out.print(table)


COMMANDS = [replay_command]
