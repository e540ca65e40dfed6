"""The engine directory: save/load round trip, hash and version checks, atomic writes, cached debug engines."""

import json
import os
import shutil

import pytest
import torch

import workbench.builder.engine as engine_mod
from workbench.builder.build import build, build_engine, debug_engine
from workbench.builder.engine import FORMAT_VERSION, MANIFEST, WEIGHTS, load_engine, save_engine, sha256_file
from workbench.errors import EngineFileError
from workbench.runtime.executor import Executor


@pytest.fixture
def engine_dir(tiny_engine_dir, tmp_path):
    """A private copy of the tiny engine, free to edit."""
    return shutil.copytree(tiny_engine_dir, tmp_path / "engine")


def test_round_trip(tiny_checkpoint, tmp_path, prompts):
    built = build(tiny_checkpoint)
    path = save_engine(built, tmp_path / "e")
    loaded = load_engine(path)
    assert loaded.path == path and loaded.weights_sha256 == sha256_file(path / WEIGHTS) == built.weights_sha256
    assert loaded.network.dump() == built.network.dump()
    assert loaded.network.to_dict() == built.network.to_dict()
    assert loaded.weights_sha256 == json.loads((path / MANIFEST).read_text())["weights_sha256"]
    assert sorted(loaded.network.weights) == sorted(built.network.weights)
    for k, w in built.network.weights.items():
        assert torch.equal(loaded.network.weights[k], w), k
    assert (loaded.architecture, loaded.model_config, loaded.build_config) == \
        (built.architecture, built.model_config, built.build_config)
    a, b = Executor(built).forward(prompts), Executor(loaded).forward(prompts)
    assert all(torch.equal(x["logits"], y["logits"]) for x, y in zip(a, b))


def test_manifest_fields(engine_dir):
    m = json.loads((engine_dir / MANIFEST).read_text())
    assert m["format_version"] == FORMAT_VERSION
    assert m["architecture"] == "LlamaForCausalLM" and m["marked_outputs"] == []
    assert m["build_config"]["dtype"] == "float32"
    assert (engine_dir / "tokenizer" / "generation_config.json").is_file()  # copied from the checkpoint


def test_hash_mismatch_is_refused(engine_dir):
    weights = engine_dir / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match=r"weights\.safetensors: sha256 .* does not match engine\.json") as e:
        load_engine(engine_dir)
    assert str(engine_dir / WEIGHTS) in str(e.value) and "\n" not in str(e.value)
    load_engine(engine_dir, verify=False)  # the file itself is still readable


def test_truncated_weights_are_refused(engine_dir):
    weights = engine_dir / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(EngineFileError, match=r"does not match engine\.json"):
        load_engine(engine_dir)
    with pytest.raises(EngineFileError, match=r"weights\.safetensors: unreadable safetensors file"):
        load_engine(engine_dir, verify=False)


def test_format_version_mismatch_is_refused(engine_dir):
    m = json.loads((engine_dir / MANIFEST).read_text())
    (engine_dir / MANIFEST).write_text(json.dumps({**m, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(EngineFileError, match=rf"engine\.json: format version {FORMAT_VERSION + 1}, this workbench "
                                              rf"reads version {FORMAT_VERSION}; rebuild"):
        load_engine(engine_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{", r"malformed JSON"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "graph"}), r"invalid engine manifest \(missing field 'graph'\)"),
    (lambda m: json.dumps({**m, "graph": {**m["graph"], "nodes": m["graph"]["nodes"] + m["graph"]["nodes"][-1:]}}),
     r"invalid engine manifest \(duplicate node name 'logits'\)"),
    (lambda m: json.dumps({**m, "build_config": {**m["build_config"], "dtype": "fp8"}}), r"unknown dtype 'fp8'"),
])
def test_broken_manifest_is_refused(engine_dir, edit, message):
    m = json.loads((engine_dir / MANIFEST).read_text())
    (engine_dir / MANIFEST).write_text(edit(m))
    with pytest.raises(EngineFileError, match=message) as e:
        load_engine(engine_dir)
    assert str(engine_dir / MANIFEST) in str(e.value)


def test_missing_engine_pieces(tmp_path, engine_dir):
    with pytest.raises(EngineFileError, match="no such directory"):
        load_engine(tmp_path / "nowhere")
    with pytest.raises(EngineFileError, match="engine.json is missing"):
        load_engine(tmp_path)
    (engine_dir / WEIGHTS).unlink()
    with pytest.raises(EngineFileError, match=r"weights\.safetensors: missing"):
        load_engine(engine_dir)


# -- atomic writes ------------------------------------------------------------------------------

def _fail_midway(monkeypatch):
    """Make the weights writer leave a partial file behind and then fail, like a full disk."""
    def broken_save_file(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine_mod, "save_file", broken_save_file)


def test_failed_write_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    built = build(tiny_checkpoint)
    _fail_midway(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        save_engine(built, tmp_path / "out" / "e")
    assert os.listdir(tmp_path / "out") == []  # neither the engine nor its temporary sibling


def test_failed_write_keeps_the_old_engine(engine_dir, tiny_checkpoint, monkeypatch):
    before = {p.name: p.read_bytes() for p in engine_dir.iterdir() if p.is_file()}
    _fail_midway(monkeypatch)
    with pytest.raises(OSError):
        save_engine(build(tiny_checkpoint), engine_dir)
    assert {p.name: p.read_bytes() for p in engine_dir.iterdir() if p.is_file()} == before
    assert sorted(os.listdir(engine_dir.parent)) == ["engine"]


def test_overwrite_replaces_the_engine_without_leftovers(engine_dir, tiny_checkpoint):
    from workbench.builder.config import BuildConfig

    save_engine(build(tiny_checkpoint, BuildConfig(dtype="bf16")), engine_dir)
    assert load_engine(engine_dir).build_config.dtype == "bfloat16"
    assert sorted(os.listdir(engine_dir.parent)) == ["engine"]


def test_refuses_to_overwrite_what_is_not_an_engine(tiny_checkpoint, tmp_path):
    built = build(tiny_checkpoint)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(EngineFileError, match="exists and is not an engine directory; refusing"):
        save_engine(built, other)
    assert os.listdir(other) == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(EngineFileError, match="exists and is not a directory; refusing"):
        save_engine(built, a_file)
    with pytest.raises(EngineFileError, match="cannot create the engine directory"):
        save_engine(built, a_file / "e")
    assert a_file.read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["file", "notes"]


def test_engine_files_follow_the_umask(tiny_checkpoint, tmp_path):
    old = os.umask(0o022)
    try:
        path = save_engine(build(tiny_checkpoint), tmp_path / "e")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
    assert (path / WEIGHTS).stat().st_mode & 0o777 == 0o644
    assert (path / MANIFEST).stat().st_mode & 0o777 == 0o644


# -- debug engines ------------------------------------------------------------------------------

def test_debug_engine_is_cached_by_marked_set(engine_dir, prompts):
    base = load_engine(engine_dir)
    first = debug_engine(base, ["1.attn", "*.mlp"])
    assert first.path.parent == engine_dir / "debug"
    assert sorted(first.marked) == ["layers.0.mlp", "layers.1.attn", "layers.1.mlp"]
    stamp = (first.path / MANIFEST).stat().st_mtime_ns
    again = debug_engine(load_engine(engine_dir), ["*.mlp", "layers.1.attn"])  # same set, other spelling and order
    assert again.path == first.path
    assert (again.path / MANIFEST).stat().st_mtime_ns == stamp
    assert os.listdir(engine_dir / "debug") == [first.path.name]
    other = debug_engine(base, "0.attn")
    assert sorted(os.listdir(engine_dir / "debug")) == sorted([first.path.name, other.path.name])
    assert debug_engine(base, []).path == engine_dir  # nothing extra marked: the engine itself
    # the cached engine shares the weights file and computes the same logits
    assert sha256_file(first.path / WEIGHTS) == base.weights_sha256  # reused (hard link or copy), not re-serialised
    x, y = Executor(base).forward(prompts), Executor(again).forward(prompts)
    assert all(torch.equal(a["logits"], b["logits"]) for a, b in zip(x, y))


def test_broken_debug_cache_entry_is_rebuilt(engine_dir):
    base = load_engine(engine_dir)
    first = debug_engine(base, "0.mlp")
    (first.path / MANIFEST).write_text("{")
    rebuilt = debug_engine(base, "0.mlp")
    assert rebuilt.path == first.path and load_engine(rebuilt.path).marked == ["layers.0.mlp"]


def test_build_engine_marks_requested_names(tiny_checkpoint, tmp_path):
    from workbench.builder.config import BuildConfig

    e = build_engine(tiny_checkpoint, tmp_path / "e", BuildConfig(marked=["0.attn.core", "final_norm"]))
    assert load_engine(e.path).marked == ["layers.0.attn.core", "final_norm"]
