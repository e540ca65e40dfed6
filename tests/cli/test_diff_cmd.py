"""`wb diff`: exit codes, the table, JSON output, tolerance items, and one-line errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from workbench.cli import main


@pytest.fixture
def wb(monkeypatch, tmp_path):
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, ["diff", *map(str, args)], catch_exceptions=False)

    return invoke


def test_all_pass_exits_0_with_a_table_and_json(wb, engine_fp32, tmp_path):
    out = tmp_path / "sub" / "report.json"
    r = wb(engine_fp32.path, "--layer", "1.attn", "--layer", "*.mlp", "--prompt", "Hello there", "--json", out)
    assert r.exit_code == 0, r.output
    assert "layers.1.attn" in r.output and "layers.2.mlp" in r.output and "4/4 pass" in r.output
    assert "all names pass" in r.output
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["prompt"] == "Hello there"
    (report,) = data["reports"]
    assert [row["name"] for row in report["rows"]] == ["layers.0.mlp", "layers.1.attn", "layers.1.mlp", "layers.2.mlp"]
    assert len(report["token_ids"]) == 11 and report["token_ids"][:5] == [42, 71, 78, 78, 81]  # one token a byte
    assert not list(out.parent.glob(".*.tmp"))  # written through a temporary file


def test_a_checkpoint_argument_is_built_and_cached(wb, tiny_ckpt):
    r = wb(tiny_ckpt, "--layer", "logits", "--mode", "both", "--steps", "0,2")
    assert r.exit_code == 0, r.output
    assert r.output.count("accumulated diff") == 2 and r.output.count("local diff") == 2
    assert "generation step 2" in r.output


def test_a_planted_fault_fails_with_exit_1_and_first_divergence(wb, planted, tmp_path):
    engine, node = planted("scale_o_proj", 2)
    out = tmp_path / "div.json"
    r = wb(engine.path, "--first-divergence", "--mode", "local", "--steps", "3", "--json", out)
    assert r.exit_code == 1, r.output
    assert f"first failure {node}" in r.output and f"first error jump {node}" in r.output
    assert "◀ first failure" in r.output
    data = json.loads(out.read_text())
    assert data["passed"] is False and data["layers"][0]["first_failing"] == node
    assert data["tokens"]["steps_checked"] == 4


def test_tolerance_items_split_on_spaces(wb, planted):
    engine, node = planted("scale_mlp_down", 1)
    assert wb(engine.path, "--layer", "1.mlp").exit_code == 1
    r = wb(engine.path, "--layer", "1.mlp", "--layer", "0.mlp", "--atol", "1e-5 1.mlp:100", "--rtol", "1e-5")
    assert r.exit_code == 0, r.output
    assert "1.mlp:100" in r.output


@pytest.mark.parametrize("args, message", [
    (["--layer", "1.mpl"], "did you mean layers.1.mlp"),
    (["--layer", "0.attn.q_rope"], "no HF counterpart"),
    (["--atol", "abc"], "is not a number"),
    (["--atol", "9.mlp:1"], "--atol"),
    (["--steps", "x"], "--steps"),
    (["--error-stat", "p95"], "--error-stat"),
    (["--dtype", "bf16"], "applies only when building from a checkpoint"),
])
def test_bad_input_exits_2_with_one_line(wb, engine_fp32, args, message):
    r = wb(engine_fp32.path, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_a_missing_model_argument_exits_2(wb, tmp_path):
    r = wb(tmp_path / "nothing")
    assert r.exit_code == 2 and "neither an engine directory" in r.output


def test_baseline_of_another_model_or_gone_exits_2(wb, engine_fp32, tmp_path):
    import shutil

    from tests.inspect.conftest import make_tiny_checkpoint
    from workbench.builder.build import build_engine

    other = make_tiny_checkpoint(tmp_path / "other", num_hidden_layers=2, tokenizer=False)
    r = wb(engine_fp32.path, "--baseline", other)
    assert r.exit_code == 2 and "not the model the engine" in r.output and "num_layers 3 (engine) vs 2" in r.output
    moved = tmp_path / "moved"
    shutil.copytree(engine_fp32.source["checkpoint"], moved)
    engine = build_engine(moved, tmp_path / "engine")
    shutil.rmtree(moved)
    r = wb(engine.path)
    assert r.exit_code == 2 and "the HF checkpoint the engine was built from is gone" in r.output
    r = wb(engine.path, "--baseline", engine_fp32.source["checkpoint"], "--layer", "logits")
    assert r.exit_code == 0, r.output


def test_backend_cuda_diffs_the_fast_path_and_saves_it_in_the_session(wb, engine_fp32, tmp_path):
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the cuda backend needs a GPU or Triton's interpreter")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out, session = tmp_path / "cuda.json", tmp_path / "cuda.wbs"
    r = wb(engine_fp32.path, "--backend", "cuda", "--device", device, "--first-divergence", "--steps", "2",
           "--token-ids", "1,40,71,78,78,81", "--json", out, "--save-session", session)
    assert r.exit_code == 0, r.output
    assert f"cuda backend on {device}" in r.output and "every name passes" in r.output
    data = json.loads(out.read_text())
    assert {rep["engine"]["backend"] for rep in data["reports"]} == {"cuda"}
    assert json.loads(session.read_text())["backend"] == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("args, message", [
    (["--backend", "cuda"], "--backend cuda: this machine has no CUDA GPU"),
    (["--backend", "cuda", "--device", "cpu"], "set TRITON_INTERPRET=1"),
    (["--device", "cuda"], "--device cuda: this machine has no CUDA GPU"),
])
def test_backend_cuda_without_a_usable_device_exits_2_with_one_line(wb, engine_fp32, monkeypatch, args, message):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    r = wb(engine_fp32.path, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.count("error:") == 1 and len(r.output.strip().splitlines()) == 1
