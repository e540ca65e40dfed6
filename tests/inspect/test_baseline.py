"""The HF baseline: hook captures against the HF model's own outputs, greedy steps through its cache, model checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.inspect.conftest import TOKENS, make_tiny_checkpoint
from workbench.errors import WorkbenchError
from workbench.inspect.baseline import Baseline, check_same_model
from workbench.names import canonical_names


def test_context_capture_matches_the_hf_model(baseline_fp32):
    model = baseline_fp32.model
    names = canonical_names(3)
    run = baseline_fp32.run(TOKENS, names)
    cap = run.captures[0]
    assert set(cap) == set(names)
    with torch.inference_mode():
        out = model(torch.tensor([TOKENS]), output_hidden_states=True)
    n = len(TOKENS)
    assert torch.equal(cap["logits"], out.logits[0])
    assert torch.equal(cap["embed"], model.model.embed_tokens.weight[TOKENS])
    assert torch.equal(cap["layers.0"], out.hidden_states[1][0])  # hidden_states[i + 1] is layer i's output
    assert cap["layers.1.attn.qkv"].shape == (n, 64 + 2 * 32)  # q (4 heads of 16), k and v (2 heads each)
    assert cap["layers.1.attn.core"].shape == (n, 64)
    assert run.tokens == [int(out.logits[0, -1].argmax())]
    assert run.sequence == TOKENS


def test_core_is_the_input_of_o_proj(baseline_fp32):
    run = baseline_fp32.run(TOKENS, ["layers.2.attn.core", "layers.2.attn"])
    o_proj = baseline_fp32.model.model.layers[2].self_attn.o_proj
    with torch.inference_mode():
        assert torch.allclose(o_proj(run.captures[0]["layers.2.attn.core"]), run.captures[0]["layers.2.attn"])


def test_steps_follow_hf_greedy_generation_one_token_each(baseline_fp32):
    run = baseline_fp32.run(TOKENS, ["layers.1", "logits"], steps=4)
    with torch.inference_mode():
        ref = baseline_fp32.model.generate(torch.tensor([TOKENS]), max_new_tokens=5, do_sample=False,
                                           min_new_tokens=5, pad_token_id=0)
    assert run.tokens == ref[0, len(TOKENS):].tolist()
    assert run.num_steps == 4 and run.sequence == TOKENS + run.tokens[:4]
    for step in range(1, 5):
        assert run.captures[step]["layers.1"].shape == (1, 64)
    # a step's token, through the cache, equals the same position of a plain forward pass over the whole sequence
    with torch.inference_mode():
        full = baseline_fp32.model(torch.tensor([run.sequence])).logits[0]
    torch.testing.assert_close(run.full("logits"), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(run.step_logits, full[len(TOKENS) - 1:], rtol=1e-5, atol=1e-5)


def test_capture_only_chosen_steps(baseline_fp32):
    run = baseline_fp32.run(TOKENS, ["embed"], steps=3, capture_steps=[2])
    assert list(run.captures) == [2]
    with pytest.raises(WorkbenchError, match="not captured"):
        run.full("embed")


def test_bad_inputs(baseline_fp32):
    with pytest.raises(WorkbenchError, match="outside the model's vocabulary"):
        baseline_fp32.run([1, 5000], ["embed"])
    with pytest.raises(WorkbenchError, match="no HF counterpart"):
        baseline_fp32.run(TOKENS, ["layers.0.attn.q_rope"])
    with pytest.raises(WorkbenchError, match="no tokens"):
        baseline_fp32.run([], ["embed"])


def test_dtype_follows_the_engine(engine_bf16, engine_fp32):
    assert Baseline.for_engine(engine_bf16).model.dtype == torch.bfloat16
    assert Baseline.for_engine(engine_bf16, dtype="fp32").dtype == "float32"


def test_a_different_model_is_refused(engine_fp32, tmp_path):
    other = make_tiny_checkpoint(tmp_path / "other", num_hidden_layers=2, tokenizer=False)
    with pytest.raises(WorkbenchError, match="not the model the engine .* was built from: num_layers 3"):
        Baseline.for_engine(engine_fp32, other)


def test_a_gone_checkpoint_is_reported(engine_fp32, tmp_path):
    ckpt = tmp_path / "moved"
    shutil.copytree(engine_fp32.source["checkpoint"], ckpt)
    engine = type(engine_fp32)(**{**vars(engine_fp32), "source": {**engine_fp32.source, "checkpoint": str(ckpt)}})
    shutil.rmtree(ckpt)
    with pytest.raises(WorkbenchError, match="moved: the HF checkpoint the engine was built from is gone.*--baseline"):
        Baseline.for_engine(engine)


def test_an_edited_config_of_the_same_model_is_a_warning(engine_fp32, tmp_path):
    ckpt = tmp_path / "edited"
    shutil.copytree(engine_fp32.source["checkpoint"], ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["some_note"] = "edited"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    warnings = check_same_model(engine_fp32, ckpt)
    assert len(warnings) == 1 and "changed since the engine was built" in warnings[0]
    assert check_same_model(engine_fp32, Path(engine_fp32.source["checkpoint"])) == []
