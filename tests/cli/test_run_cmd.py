"""`wb run` on a tiny checkpoint with a word-level tokenizer: generation, and the errors of bad options."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from tests.gpu.test_cli_cuda import _tiny_checkpoint_with_tokenizer
from workbench.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _tiny_checkpoint_with_tokenizer(tmp_path_factory.mktemp("run") / "ckpt")


def run(*args, env):
    return CliRunner().invoke(main, ["run", *args], env=env)


def test_run_generates_and_reports(ckpt, tmp_path):
    env = {"WB_CACHE": str(tmp_path / "cache")}
    res = run(str(ckpt), "--prompt", "the sea is", "--max-new-tokens", "5", env=env)
    assert res.exit_code == 0, res.output
    assert any(line.startswith("the sea is") for line in res.output.splitlines())
    assert "5 tokens (length)" in res.output
    batch = run(str(ckpt), "-p", "the sea", "-p", "a ship sails on", "--max-new-tokens", "3", "--temperature", "0.8",
                "--seed", "3", env=env)
    assert batch.exit_code == 0 and batch.output.count("tokens") >= 1


@pytest.mark.parametrize("extra, message", [
    (["--chat"], "chat template"),
    (["--temperature", "-1"], "temperature"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--backend", "cuda"], "CUDA"),
])
def test_bad_options_give_one_line_errors(ckpt, tmp_path, extra, message):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run(str(ckpt), "--prompt", "the sea", *extra, env={"WB_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 2 and message in res.output and res.output.count("error:") == 1, res.output
