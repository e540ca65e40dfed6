"""The `wb` command: thin; parses arguments, calls the library, renders with Rich."""

from __future__ import annotations

import sys

import click

from workbench.errors import WorkbenchError


class _Group(click.Group):
    """Turns WorkbenchError into one red line on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except WorkbenchError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted", fg="red", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="workbench")
def main() -> None:
    """workbench: build LLM engines, run them, and debug them against HF transformers."""


def _register() -> None:
    """Add the commands of every `workbench/cli/*_cmd.py` module present (each lists its COMMANDS)."""
    import importlib

    for name in ("build_cmd", "run_cmd", "diff_cmd", "profile_cmd", "replay_cmd", "tui_cmd", "quant_cmd",
                 "cache_cmd"):
        try:
            module = importlib.import_module(f"workbench.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"workbench.cli.{name}":
                raise
            continue
        for cmd in module.COMMANDS:
            main.add_command(cmd)


_register()
