"""fp32 parity with HF transformers: logits of a mixed-length batch, and every canonical name of a debug engine."""

import json
import shutil

import pytest
import torch

from tests.conftest import CHECKPOINTS, hf_capture, hf_logits, rel_max_err
from workbench.builder.build import build, debug_engine
from workbench.builder.config import BuildConfig
from workbench.builder.models.llama import LlamaConfig, hf_name_map, rope_inv_freq
from workbench.names import canonical_names
from workbench.runtime.executor import Executor

TOL = 1e-5


@pytest.fixture(scope="module")
def fp32_engine(hf_checkpoint):
    """name -> (engine, HF model), built once per module."""
    built = {}

    def get(name):
        if name not in built:
            path, model = hf_checkpoint(name)
            built[name] = (build(path), model)
        return built[name]

    return get


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_logits_match_hf(name, fp32_engine, prompts):
    engine, model = fp32_engine(name)
    outs = Executor(engine).forward(prompts)
    for seq, out, ref in zip(prompts, outs, hf_logits(model, prompts)):
        err = rel_max_err(out["logits"], ref)
        assert err <= TOL, f"{name}, prompt of {len(seq)} tokens: relative max error {err:.2e}"


@pytest.mark.parametrize("name", ["llama_gqa", "llama_mqa", "llama3_rope", "mistral_window", "qwen2_bias", "llama_tied"])
def test_every_canonical_name_matches_hf(name, fp32_engine, prompts):
    engine, model = fp32_engine(name)
    dbg = debug_engine(engine, "all")
    config = LlamaConfig.from_dict(engine.model_config)
    names = canonical_names(config.num_layers)
    assert set(names) <= set(dbg.network.outputs)
    name_map = hf_name_map(config)
    assert set(name_map) == set(names)
    seqs = [prompts[0], prompts[3]]
    for seq, out in zip(seqs, Executor(dbg).forward(seqs)):
        ref = hf_capture(model, seq, name_map)
        for n in names:
            err = rel_max_err(out[n], ref[n])
            assert err <= TOL, f"{name}: {n} relative max error {err:.2e}"


def test_debug_engine_marks_only_what_was_asked(fp32_engine, prompts):
    engine, model = fp32_engine("llama_gqa")
    dbg = debug_engine(engine, ["1.attn", "*.mlp"])
    assert sorted(dbg.marked) == ["layers.0.mlp", "layers.1.attn", "layers.1.mlp"]
    out = Executor(dbg).forward([prompts[1]])[0]
    assert set(out) == {"logits", "layers.0.mlp", "layers.1.attn", "layers.1.mlp"}
    ref = hf_capture(model, prompts[1], hf_name_map(LlamaConfig.from_dict(engine.model_config)))
    for n in dbg.marked:
        assert rel_max_err(out[n], ref[n]) <= TOL


def test_sliding_window_matters(fp32_engine, prompts):
    """The windowed Mistral differs from the unwindowed one beyond the window, so its parity test means something."""
    windowed, _ = fp32_engine("mistral_window")
    full, _ = fp32_engine("mistral")
    long = prompts[0]
    a, b = (Executor(e).forward([long])[0]["logits"] for e in (windowed, full))
    window = windowed.model_config["sliding_windows"][0]
    assert window == 4 < len(long)
    assert rel_max_err(a[:window], b[:window]) <= TOL  # inside the window nothing changes
    assert rel_max_err(a[window:], b[window:]) > 1e-2


@pytest.mark.parametrize("name", ["llama3_rope", "llama_linear_rope"])
def test_rope_scaling_matches_hf_frequencies(name, fp32_engine):
    engine, model = fp32_engine(name)
    config = LlamaConfig.from_dict(engine.model_config)
    ours = rope_inv_freq(config)
    theirs = model.model.rotary_emb.inv_freq.float()
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
    plain = rope_inv_freq(LlamaConfig.from_dict({**engine.model_config, "rope_scaling": None}))
    assert not torch.allclose(ours, plain, rtol=1e-2)  # the scaling changes frequencies, so parity tests it


def test_sharded_checkpoint_has_several_shards(hf_checkpoint):
    path, _ = hf_checkpoint("llama_sharded")
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("*.safetensors"))) > 2


def test_mqa_and_gqa_head_counts(fp32_engine):
    for name, kv in (("llama_mqa", 1), ("llama_gqa", 2)):
        engine, _ = fp32_engine(name)
        attn = engine.network.nodes["layers.0.attn.sdpa"]
        assert (attn.attrs["num_heads"], attn.attrs["num_kv_heads"]) == (4, kv)


def test_qwen2_has_qkv_bias_and_tied_embeddings(fp32_engine):
    engine, _ = fp32_engine("qwen2_bias")
    assert "layers.0.attn.qkv.bias" in engine.network.weights
    assert "layers.0.attn.o_proj.bias" not in engine.network.weights
    assert "logits.weight" not in engine.network.weights
    assert engine.network.nodes["logits"].inputs[1] == "embed.weight"


def test_names_marked_at_build_time_match_hf(hf_checkpoint, prompts):
    path, model = hf_checkpoint("qwen2_bias")
    names = canonical_names(2)
    engine = build(path, BuildConfig(marked=names))
    assert engine.marked == [n for n in names if n != "logits"]
    ref = hf_capture(model, prompts[0], hf_name_map(LlamaConfig.from_dict(engine.model_config)))
    out = Executor(engine).forward([prompts[0]])[0]
    for n in names:
        assert rel_max_err(out[n], ref[n]) <= TOL, n


def test_legacy_rope_scaling_config(hf_checkpoint, tmp_path, prompts):
    """Older checkpoints spell rope settings as `rope_scaling` {"type": ...} plus a top-level `rope_theta`."""
    path, model = hf_checkpoint("llama_linear_rope")
    legacy = shutil.copytree(path, tmp_path / "legacy")
    cfg = json.loads((legacy / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg.update(rope_theta=rope["rope_theta"], rope_scaling={"type": "linear", "factor": rope["factor"]})
    (legacy / "config.json").write_text(json.dumps(cfg))
    engine = build(legacy)
    assert engine.model_config["rope_scaling"]["rope_type"] == "linear"
    for out, ref in zip(Executor(engine).forward(prompts), hf_logits(model, prompts)):
        assert rel_max_err(out["logits"], ref) <= TOL
