"""Sessions: record, save, load, replay; planted regressions; bad files; paths; JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from workbench.builder.config import BuildConfig
from workbench.cli import main
from workbench.engine_cache import cached_engine
from workbench.errors import WorkbenchError
from workbench.inspect.diff import capture, compare, select_names
from workbench.inspect.replay import REGRESSION, junit_xml, record, replay
from workbench.inspect.session_file import SessionFileError, load_session, save_session
from workbench.inspect.tiny_models import tiny_checkpoint
from workbench.inspect.tolerances import Tolerances
from workbench.runtime import torch_ops

SPEC = {"architecture": "LlamaForCausalLM", "seed": 3,
        "config": dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2)}
TOKENS = [1, 5, 9, 33, 2, 70, 11]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import os

    old = os.environ.get("WB_CACHE")
    os.environ["WB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["WB_CACHE"]
    else:
        os.environ["WB_CACHE"] = old


@pytest.fixture(scope="module")
def recorded(cache, tmp_path_factory):
    """A session of the tiny model: all names, both modes, context + step 2, with tensors."""
    engine = cached_engine(tiny_checkpoint(SPEC), BuildConfig(max_seq_len=32))
    tol = Tolerances.parse(["1e-4"], ["1e-4"])
    names = select_names(engine, "all")
    run = capture(engine, names, token_ids=TOKENS, modes=("accumulated", "local"), steps=(0, 2))
    reports = [compare(run, s, m, tol) for s in (0, 2) for m in ("accumulated", "local")]
    assert all(r.passed for r in reports)
    session = record(engine, reports, model={"source": "tiny", "spec": SPEC}, run=run, title="tiny")
    path = save_session(session, tmp_path_factory.mktemp("sessions") / "tiny.wbs")
    return path


def test_round_trip_keeps_everything(recorded):
    s = load_session(recorded)
    assert s.model["source"] == "tiny" and s.token_ids == TOKENS and s.steps == [0, 2]
    assert s.modes == ["accumulated", "local"] and len(s.reports) == 4
    assert s.expected_failures == {"accumulated/0": [], "local/0": [], "accumulated/2": [], "local/2": []}
    assert "layers.1.attn.core" in s.names and s.environment["torch"]
    assert s.tensors["accumulated/0/layers.0.mlp"].shape == s.tensors["hf/0/layers.0.mlp"].shape


def test_replay_passes_and_writes_junit(recorded, tmp_path):
    result = replay(recorded)
    assert result.passed and not result.moved
    assert len(result.outcomes) == 4 * len(load_session(recorded, with_tensors=False).names)
    root = ET.fromstring(junit_xml([result]))
    assert root.find("testsuite").get("failures") == "0"
    res = CliRunner().invoke(main, ["replay", str(recorded), "--junit", str(tmp_path / "j.xml")])
    assert res.exit_code == 0, res.output
    assert "replay: 1 passed, 0 failed" in res.output
    assert ET.parse(tmp_path / "j.xml").getroot().tag == "testsuites"


def test_a_changed_kernel_is_a_regression_naming_the_layer(recorded, monkeypatch):
    real = torch_ops.OPS["rms_norm"]

    def drifted(node, xs, meta):  # a "kernel change" that drops the epsilon of one layer's norm
        out = real(node, xs, meta)
        return out * 1.01 if node.name == "layers.1.post_norm" else out

    monkeypatch.setitem(torch_ops.OPS, "rms_norm", drifted)
    result = replay(recorded)
    assert not result.passed
    first = result.regressions[0]
    assert first.name == "layers.1.post_norm" and first.status == REGRESSION
    assert any("rel_l2" in m for m in first.moved)
    res = CliRunner().invoke(main, ["replay", str(recorded)])
    assert res.exit_code == 1 and "layers.1.post_norm" in res.output and "regression" in res.output


def test_a_changed_weight_conversion_is_a_regression(recorded, monkeypatch):
    from workbench.builder.models import llama

    real = llama.hf_state_to_engine

    def scaled(config, hf, source):
        out = real(config, hf, source)
        out["layers.0.mlp.down.weight"] = out["layers.0.mlp.down.weight"] * 1.05
        return out

    monkeypatch.setattr(llama, "hf_state_to_engine", scaled)
    monkeypatch.setattr("workbench.engine_cache.builder_fingerprint", lambda: "changed-builder")
    result = replay(recorded)
    assert [o.name for o in result.regressions][0] == "layers.0.mlp"


def test_update_accepts_new_results(recorded, tmp_path, monkeypatch):
    copy = tmp_path / "copy.wbs"
    s = load_session(recorded)
    s.tensors = None
    save_session(s, copy)
    real = torch_ops.OPS["silu"]
    monkeypatch.setitem(torch_ops.OPS, "silu", lambda node, xs, meta: real(node, xs, meta) * 1.02)
    assert not replay(copy, update=True).passed
    after = load_session(copy)
    assert after.expected_failures["accumulated/0"]  # now recorded as expected
    assert replay(copy).passed


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "hand_edited", "wrong_version", "not_a_session",
                                    "escaping_tensors", "missing_tensors", "corrupt_tensors"])
def test_bad_session_files_get_one_line_errors(recorded, tmp_path, damage):
    import shutil

    path = tmp_path / recorded.name
    tensors = tmp_path / (recorded.name + ".safetensors")
    shutil.copy(recorded, path)
    shutil.copy(recorded.with_name(tensors.name), tensors)
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff" * 50)
    elif damage == "hand_edited":
        _edit(path, lambda d: d["tolerances"].update({"atol": {"": 1.0}}))
    elif damage == "wrong_version":
        _edit(path, lambda d: d.update(format_version=99))
    elif damage == "not_a_session":
        path.write_text(json.dumps({"hello": 1}))
    elif damage == "escaping_tensors":
        from workbench.inspect import session_file

        def escape(d):
            d.pop("checksum")
            d["tensors_file"] = "../../etc/passwd"
            d["checksum"] = session_file._checksum(d)

        _edit(path, escape)
    elif damage == "missing_tensors":
        tensors.unlink()
    elif damage == "corrupt_tensors":
        tensors.write_bytes(tensors.read_bytes()[:1000])
    with pytest.raises(SessionFileError) as err:
        load_session(path)
    assert "\n" not in str(err.value) and str(path.name) in str(err.value)
    res = CliRunner().invoke(main, ["replay", str(path)])
    if damage not in ("missing_tensors", "corrupt_tensors"):  # replay itself does not need the tensors
        assert res.exit_code == 2 and res.output.count("error:") == 1


def test_a_symlinked_tensors_file_is_refused(recorded, tmp_path):
    import shutil

    path = tmp_path / recorded.name
    shutil.copy(recorded, path)
    (tmp_path / (recorded.name + ".safetensors")).symlink_to(recorded.with_name(recorded.name + ".safetensors"))
    with pytest.raises(SessionFileError, match="symbolic link"):
        load_session(path)


def test_recorded_on_gpu_replays_on_cpu_and_says_what_it_cannot_compare(recorded, tmp_path):
    from workbench.inspect import session_file

    path = tmp_path / "gpu.wbs"
    s = load_session(recorded)
    s.tensors = None
    s.environment = {**s.environment, "device": "cuda:0", "device_name": "NVIDIA H100", "backend": "cuda"}
    s.profile = {"phases": []}
    session_file.save_session(s, path)
    result = replay(path, device="cpu")
    assert result.passed
    assert any("NVIDIA H100" in n and "not reproduced" in n for n in result.notes)
    assert any("timings" in n for n in result.notes)


def test_wb_diff_saves_a_session_that_replays(cache, tmp_path):
    engine = cached_engine(tiny_checkpoint(SPEC), BuildConfig(max_seq_len=32))
    path = tmp_path / "cli.wbs"
    args = ["diff", str(engine.path), "--token-ids", "1,5,9,33", "--mode", "both", "--steps", "1",
            "--atol", "1e-4", "--rtol", "1e-4", "--save-session", str(path), "--with-tensors"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    s = load_session(path)
    assert s.token_ids == [1, 5, 9, 33] and s.modes == ["accumulated", "local"] and s.steps == [0, 1]
    assert s.model == {"source": "checkpoint", "path": str(tiny_checkpoint(SPEC))}
    assert "local/1/layers.1.mlp" in s.tensors
    assert replay(path).passed
    bad = CliRunner().invoke(main, ["diff", str(engine.path), "--token-ids", "1,2", "--save-session", str(tmp_path / "x.json")])
    assert bad.exit_code == 2 and "end in .wbs" in bad.output


def test_sessions_without_a_backend_field_replay_with_torch(recorded, tmp_path):
    from pathlib import Path

    checked_in = sorted((Path(__file__).parents[2] / "sessions").glob("*.wbs"))
    assert len(checked_in) == 6 and all(load_session(p, with_tensors=False).backend == "torch" for p in checked_in)
    assert "backend" not in json.loads(checked_in[0].read_text())  # recorded before the field
    assert load_session(recorded).backend == "torch"
    assert {r.engine["backend"] for r in replay(recorded).reports} == {"torch"}


def test_a_cuda_session_records_and_replays_its_backend(cache, tmp_path, monkeypatch):
    import os

    import torch

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the cuda backend needs a GPU or Triton's interpreter")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = cached_engine(tiny_checkpoint(SPEC), BuildConfig(max_seq_len=32))
    tol = Tolerances.parse(["1e-4"], ["1e-4"])
    run = capture(engine, select_names(engine, "all"), token_ids=TOKENS, modes=("accumulated",), steps=(0, 1),
                  device=device, backend="cuda")
    reports = [compare(run, s, "accumulated", tol) for s in (0, 1)]
    path = save_session(record(engine, reports, model={"source": "tiny", "spec": SPEC}, device=device), tmp_path / "c.wbs")
    assert load_session(path).backend == "cuda" and json.loads(path.read_text())["backend"] == "cuda"
    result = replay(path)
    assert result.passed and {r.engine["backend"] for r in result.reports} == {"cuda"}
    assert {r.engine["backend"] for r in replay(path, backend="torch").reports} == {"torch"}
    if not torch.cuda.is_available():  # no interpreter either: the torch backend, and a note saying so
        monkeypatch.delenv("TRITON_INTERPRET")
        result = replay(path)
        assert result.passed and {r.engine["backend"] for r in result.reports} == {"torch"}
        assert any("recorded with the cuda backend" in n and "not reproduced" in n for n in result.notes)
        with pytest.raises(WorkbenchError, match="--update would record torch-backend results"):
            replay(path, update=True)
        res = CliRunner().invoke(main, ["replay", str(path), "--backend", "cuda"])
        assert res.exit_code == 2 and "TRITON_INTERPRET=1" in res.output


def test_a_session_with_an_unknown_backend_is_refused(recorded, tmp_path):
    from workbench.inspect import session_file

    m = json.loads(recorded.read_text())
    m["backend"] = "tensorrt"
    m.pop("checksum")
    m["checksum"] = session_file._checksum(m)
    bad = tmp_path / "bad.wbs"
    bad.write_text(json.dumps(m))
    with pytest.raises(SessionFileError, match="backend must be one of torch, cuda"):
        load_session(bad, with_tensors=False)
