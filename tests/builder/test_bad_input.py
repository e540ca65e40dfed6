"""Bad input: one clear line, a non-zero exit, nothing half-written; through the library and through `wb`."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from workbench.builder.build import build, debug_engine
from workbench.builder.config import BuildConfig
from workbench.builder.engine import MANIFEST, WEIGHTS, load_engine
from workbench.cli import main
from workbench.errors import ConversionError, EngineFileError, PatternError, WorkbenchError

WB = Path(sys.executable).with_name("wb")


def _config(**changes):
    def edit(d: Path):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))

    return edit


def _weights(fn):
    def edit(d: Path):
        w = load_file(str(d / "model.safetensors"))
        fn(w)
        save_file(w, str(d / "model.safetensors"))

    return edit


def _truncate(n):
    def edit(d: Path):
        f = d / "model.safetensors"
        f.write_bytes(f.read_bytes()[:n])

    return edit


K_PROJ = "model.layers.0.self_attn.k_proj.weight"
UP_PROJ = "model.layers.1.mlp.up_proj.weight"

# name -> (edit of a good checkpoint dir, regex the one-line message must match)
CASES = {
    "no_dir": (lambda d: shutil.rmtree(d), r"not a checkpoint directory"),
    "no_config": (lambda d: (d / "config.json").unlink(), r"config\.json: not found"),
    "malformed_config": (lambda d: (d / "config.json").write_text('{"hidden_size": 64,'), r"config\.json: malformed JSON"),
    "config_not_object": (lambda d: (d / "config.json").write_text("[1, 2]"), r"config\.json: expected a JSON object"),
    "missing_field": (_config(hidden_size=None), r"config\.json: missing field 'hidden_size'"),
    "bad_field": (_config(num_hidden_layers="two"), r"field 'num_hidden_layers' must be a positive integer, got 'two'"),
    "bad_heads": (_config(num_key_value_heads=3), r"num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    "unsupported_arch": (_config(architectures=["GPT2LMHeadModel"]),
                         r"architecture 'GPT2LMHeadModel' is not supported; supported: LlamaForCausalLM, "
                         r"MistralForCausalLM, Qwen2ForCausalLM"),
    "no_arch": (_config(architectures=None), r"no 'architectures' field; supported: LlamaForCausalLM"),
    "unsupported_rope": (_config(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}),
                         r"rope type 'yarn' is not supported; supported: default, linear, llama3"),
    "incomplete_llama3_rope": (_config(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}),
                               r"rope type 'llama3' needs field 'low_freq_factor'"),
    "missing_weight": (_weights(lambda w: w.pop(UP_PROJ)), rf"missing weight '{UP_PROJ}'"),
    "wrong_shape": (_weights(lambda w: w.__setitem__(K_PROJ, torch.zeros(16, 64))),
                    rf"weight '{K_PROJ}' has shape \[16, 64\], expected \[32, 64\]"),
    "integer_weight": (_weights(lambda w: w.__setitem__("model.norm.weight", torch.ones(64, dtype=torch.int8))),
                       r"weight 'model.norm.weight' has dtype torch.int8, expected a floating-point tensor"),
    "unexpected_weight": (_weights(lambda w: w.__setitem__("model.layers.9.extra", torch.zeros(2))),
                          r"unexpected weight 'model.layers.9.extra'"),
    "truncated_weights": (_truncate(5000), r"model\.safetensors: unreadable safetensors file, truncated or corrupt"),
    "truncated_header": (_truncate(20), r"model\.safetensors: unreadable safetensors file, truncated or corrupt"),
    "no_weights": (lambda d: (d / "model.safetensors").unlink(), r"no \*\.safetensors weights found"),
    "pickle_weights": (lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"),
                       r"only pickle weights .* never loaded"),
}


@pytest.fixture
def bad_checkpoint(tiny_checkpoint, tmp_path):
    def make(case: str) -> Path:
        d = shutil.copytree(tiny_checkpoint, tmp_path / case)
        CASES[case][0](d)
        return d

    return make


def _one_line(text: str) -> str:
    assert "\n" not in text.strip(), f"not one line: {text!r}"
    return text


@pytest.mark.parametrize("case", sorted(CASES))
def test_library_error(case, bad_checkpoint):
    ckpt = bad_checkpoint(case)
    with pytest.raises(ConversionError, match=CASES[case][1]) as e:
        build(ckpt)
    _one_line(str(e.value))


def _cli(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback, not a clean error: show it
    return result


def _error_line(result) -> str:
    """The single `error: ...` line of a failed command, checking there is exactly one and no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.stderr
    return errors[0]


@pytest.mark.parametrize("case", ["no_config", "malformed_config", "unsupported_arch", "bad_field", "missing_weight",
                                  "wrong_shape", "truncated_weights", "incomplete_llama3_rope"])
def test_cli_build_error_writes_nothing(case, bad_checkpoint, tmp_path):
    ckpt = bad_checkpoint(case)
    out = tmp_path / "out" / "engine"
    line = _error_line(_cli(["build", ckpt, "-o", out]))
    assert re.search(CASES[case][1], line), line
    assert not out.exists()
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_cli_failed_build_leaves_existing_engine_unchanged(bad_checkpoint, tiny_engine_dir, tmp_path):
    out = shutil.copytree(tiny_engine_dir, tmp_path / "engine")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _error_line(_cli(["build", bad_checkpoint("truncated_weights"), "-o", out]))
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["engine", "truncated_weights"]


def test_cli_refuses_to_build_over_a_file(tiny_checkpoint, tmp_path):
    target = tmp_path / "target"
    target.write_text("mine")
    line = _error_line(_cli(["build", tiny_checkpoint, "-o", target]))
    assert "exists and is not a directory" in line and target.read_text() == "mine"


def test_unknown_dtype(tiny_checkpoint, tmp_path):
    with pytest.raises(WorkbenchError, match=r"unknown dtype 'fp8'; choose one of fp32, fp16, bf16"):
        BuildConfig(dtype="fp8")
    line = _error_line(_cli(["build", tiny_checkpoint, "-o", tmp_path / "e", "--dtype", "fp8"]))
    assert "unknown dtype 'fp8'" in line
    assert not (tmp_path / "e").exists()


def test_unknown_layer_pattern(tiny_checkpoint, tiny_engine_dir, tmp_path):
    with pytest.raises(PatternError, match=r"unknown layer pattern 'layers\.0\.atn'.*did you mean layers\.0\.attn"):
        build(tiny_checkpoint, BuildConfig(marked=["layers.0.atn"]))
    engine = load_engine(tiny_engine_dir)
    with pytest.raises(PatternError, match=r"unknown layer pattern '1\.mpl'.*did you mean layers\.1\.mlp"):
        debug_engine(engine, "1.mpl")
    assert not (tiny_engine_dir / "debug").exists()
    line = _error_line(_cli(["build", tiny_checkpoint, "-o", tmp_path / "e", "--mark", "0.atn"]))
    assert "did you mean layers.0.attn" in line
    assert not (tmp_path / "e").exists()


@pytest.fixture
def engine_copy(tiny_engine_dir, tmp_path):
    return shutil.copytree(tiny_engine_dir, tmp_path / "engine")


def _set_manifest(engine_dir, **changes):
    m = json.loads((engine_dir / MANIFEST).read_text())
    m.update(changes)
    (engine_dir / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("edit, message", [
    (lambda d: _set_manifest(d, weights_sha256="0" * 64), r"weights\.safetensors: sha256 .* does not match engine\.json"),
    (lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:4096]), r"does not match engine\.json"),
    (lambda d: _set_manifest(d, format_version=0), r"engine\.json: format version 0, this workbench reads version 1"),
    (lambda d: (d / MANIFEST).unlink(), r"not an engine directory \(engine\.json is missing\)"),
])
def test_cli_bad_engine(engine_copy, edit, message):
    edit(engine_copy)
    with pytest.raises(EngineFileError, match=message):
        load_engine(engine_copy)
    assert re.search(message, _error_line(_cli(["inspect", engine_copy])))


def test_cli_inspect_good_engine(tiny_engine_dir):
    result = _cli(["inspect", tiny_engine_dir, "--graph"])
    assert result.exit_code == 0, result.output
    assert "LlamaForCausalLM" in result.stdout and "layers.1.attn.sdpa" in result.stdout


# Two through the real `wb` executable: exit status and stderr as a shell sees them.
def _wb(*args):
    return subprocess.run([str(WB), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_wb_subprocess_errors(bad_checkpoint, engine_copy, tmp_path):
    p = _wb("build", bad_checkpoint("unsupported_arch"), "-o", tmp_path / "out")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: ") and "supported: LlamaForCausalLM" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()
    _set_manifest(engine_copy, weights_sha256="f" * 64)
    p = _wb("inspect", engine_copy)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {engine_copy / WEIGHTS}: sha256 ")
    assert lines[0].endswith("does not match engine.json (ffffffffffff...); the file is corrupt or was replaced")


def test_cli_build_succeeds(tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    result = _cli(["build", tiny_checkpoint, "-o", out, "--dtype", "bf16", "--mark", "*.mlp", "--mark", "0.attn"])
    assert result.exit_code == 0, result.output
    engine = load_engine(out)
    assert engine.build_config.dtype == "bfloat16"
    assert engine.marked == ["layers.0.attn", "layers.0.mlp", "layers.1.mlp"]
    assert sorted(os.listdir(tmp_path)) == ["e"]


def test_token_id_outside_vocabulary(tiny_engine_dir):
    from workbench.runtime.executor import Executor

    ex = Executor(load_engine(tiny_engine_dir))
    with pytest.raises(WorkbenchError, match=r"forward: token id 128 is outside the vocabulary \(0\.\.127\)"):
        ex.forward([[1, 2], [3, 128]])
    with pytest.raises(WorkbenchError, match=r"forward: every sequence needs at least one token"):
        ex.forward([[1], []])
