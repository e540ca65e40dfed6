"""The README's commands work as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def _wb_lines(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("wb ")]


def test_setup_commands_exist():
    setup = _section("Set-up: two commands")
    for script in ("scripts/demo", "scripts/test"):
        assert f"./{script}" in setup
        assert (ROOT / script).is_file() and os.access(ROOT / script, os.X_OK)
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_commands_run(tmp_path):
    wb = Path(sys.executable).parent / "wb"
    lines = _wb_lines(_section("Commands"))
    assert len(lines) >= 3
    for line in lines:
        args = shlex.split(line)
        proc = subprocess.run([str(wb), *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{line!r} failed:\n{proc.stdout}\n{proc.stderr}"
        if args[1] == "run":
            assert proc.stdout.strip(), f"{line!r} printed no text"
        if "France" in line:
            assert "Paris" in proc.stdout
