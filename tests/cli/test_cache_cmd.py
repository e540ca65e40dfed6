"""`wb cache list` and `wb cache prune` on a fake cache: the table, JSON, what is said, and one-line errors."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from tests.cache_helpers import fake_cache
from workbench.cli import main


def wb(cache, *args):
    return CliRunner().invoke(main, ["cache", *args], env={"WB_CACHE": str(cache), "COLUMNS": "200"})


def test_list_table_and_json(tmp_path):
    cache = fake_cache(tmp_path / "cache", time.time())
    res = wb(cache, "list", "--json", str(tmp_path / "cache.json"))
    assert res.exit_code == 0, res.output
    for text in ("checkpoints/SmolLM2-135M-Instruct (default model)", "engines/tiny-abc-bf16-222/debug/d-old",
                 "debug engine", "30 d ago", "6 entries", "KiB"):
        assert text in res.output
    doc = json.loads((tmp_path / "cache.json").read_text())
    assert doc["cache"] == str(cache) and len(doc["entries"]) == 6
    assert doc["total_bytes"] == sum(e["bytes"] for e in doc["entries"])
    assert doc["entries"][3]["parent"] == "engines/tiny-abc-bf16-222"


def test_list_empty(tmp_path):
    res = wb(tmp_path / "none", "list")
    assert res.exit_code == 0 and "is empty" in res.output


def test_prune_dry_run_then_for_real(tmp_path):
    cache = fake_cache(tmp_path / "cache", time.time())
    dry = wb(cache, "prune", "--older-than", "7", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.count("would remove") == 3 and "would free" in dry.output
    assert "kept checkpoint checkpoints/SmolLM2-135M-Instruct" in dry.output and "slow" in dry.output
    assert (cache / "engines" / "tiny-abc-fp32-111").is_dir()
    res = wb(cache, "prune", "--older-than", "7")
    assert res.exit_code == 0 and res.output.count("removed ") == 3 and "freed" in res.output
    assert not (cache / "engines" / "tiny-abc-fp32-111").exists()


def test_prune_says_when_the_default_model_goes(tmp_path):
    cache = fake_cache(tmp_path / "cache", time.time())
    res = wb(cache, "prune", "--max-size", "0", "--keep-checkpoints")
    assert res.exit_code == 0 and "still" in res.output and "--keep-checkpoints" in res.output
    res = wb(cache, "prune", "--max-size", "0")
    assert "removed checkpoint checkpoints/SmolLM2-135M-Instruct" in res.output
    assert "converted again from its GGUF file" in res.output and list((cache / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--max-size", "10X"], "--max-size: '10X' is not a size"),
    (["--max-size", "-5G"], "--max-size"),
    (["--older-than", "-1"], "--older-than -1: must be 0 or more days"),
    (["--older-than", "soon"], "not a number of days"),
    (["--older-than", "inf"], "--older-than"),
    ([], "give --older-than DAYS, --max-size SIZE or both"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    cache = fake_cache(tmp_path / "cache", time.time())
    res = wb(cache, "prune", *args)
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert len(list((cache / "engines").iterdir())) == 2
