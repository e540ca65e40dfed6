"""First divergence: planted weight faults are found at their layer and node; token divergence across steps."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.inspect.conftest import TOKENS, plant
from workbench.inspect.diff import DiffReport, DiffRow, capture, diff
from workbench.inspect.divergence import (DivergenceResult, LayerDivergence, first_divergence, layer_divergence,
                                          token_divergence)
from workbench.inspect.metrics import compare_tensors
from workbench.inspect.tolerances import Tolerances, judge
from workbench.runtime.executor import Executor

TIGHT = Tolerances.parse(["1e-5"], ["1e-5"])
CASES = [("swap_q_heads", 1), ("scale_o_proj", 2), ("zero_post_norm", 0), ("zero_input_norm", 2),
         ("scale_mlp_down", 1), ("swap_q_heads", 0)]


@pytest.mark.parametrize("kind, layer", CASES)
def test_planted_faults_are_localized_in_both_modes(planted, baseline_fp32, kind, layer):
    engine, node = planted(kind, layer)
    reports = diff(engine, modes=("accumulated", "local"), steps=[0, 2], token_ids=TOKENS, tolerances=TIGHT,
                   baseline=baseline_fp32)
    for report in reports:
        d = layer_divergence(report)
        assert d.first_failing == node, (report.mode, report.step, d)
        assert d.first_jump == node, (report.mode, report.step, d)
        assert d.layer == layer
        assert d.jump_ratio > 100
        if report.mode == "local":  # fed HF's inputs, only the faulty node is off
            assert [r.name for r in report.failures] == [node]


def test_faults_in_two_layers_report_the_first(engine_fp32, baseline_fp32, tmp_path):
    ws = engine_fp32.network.weights
    engine = plant(engine_fp32, tmp_path / "two", {
        "layers.2.attn.o_proj.weight": ws["layers.2.attn.o_proj.weight"] * 2,
        "layers.1.mlp.gate_up.weight": ws["layers.1.mlp.gate_up.weight"] * 0.7,
    })
    acc, loc = diff(engine, modes=("accumulated", "local"), token_ids=TOKENS, tolerances=TIGHT, baseline=baseline_fp32)
    assert layer_divergence(acc).first_failing == "layers.1.mlp"
    assert layer_divergence(loc).first_failing == "layers.1.mlp"
    assert [r.name for r in loc.failures] == ["layers.1.mlp", "layers.2.attn"]  # local mode sees both


def test_clean_engine_has_no_divergence(engine_fp32, baseline_fp32):
    result = first_divergence(engine_fp32, modes=("accumulated", "local"), token_ids=TOKENS, search_steps=6,
                              tolerances=TIGHT, baseline=baseline_fp32)
    assert result.passed and not result.tokens.diverged
    assert result.tokens.steps_checked == 7 and result.tokens.hf_tokens == result.tokens.engine_tokens
    assert all(d.first_failing is None and d.first_jump is None for d in result.layers)


def test_token_divergence_at_a_later_step(engine_fp32, baseline_fp32, tmp_path):
    run = baseline_fp32.run(TOKENS, [], steps=8, capture_steps=[])
    prompt_tokens = set(TOKENS)
    # the first generated token that the prompt and earlier steps never used: corrupt its embedding only
    k = next(i for i, t in enumerate(run.tokens[:-1]) if t not in prompt_tokens and t not in run.tokens[:i])
    target = run.tokens[k]
    ws = engine_fp32.network.weights
    emb = ws["embed.weight"].clone()
    emb[target] = -10 * emb[target]
    engine = plant(engine_fp32, tmp_path / "embed", {"embed.weight": emb})
    result = first_divergence(engine, modes=("accumulated", "local"), token_ids=TOKENS, search_steps=8,
                              tolerances=TIGHT, baseline=baseline_fp32, decode=lambda ids: f"<{ids[0]}>")
    t = result.tokens
    # fed at step k + 1, the token changes everything from there on; steps 0..k agree
    assert t.diverged and t.step == k + 1 and t.position == len(TOKENS) + k
    assert t.hf_tokens[:k + 1] == t.engine_tokens[:k + 1]
    assert t.hf_token == run.tokens[k + 1] and t.engine_token != t.hf_token
    assert t.hf_text == f"<{t.hf_token}>"
    # logprobs agree with each side's own logits
    hf_logp = torch.log_softmax(run.step_logits[k + 1], -1)
    assert t.hf_logprob == pytest.approx(float(hf_logp[t.hf_token]), abs=1e-5)
    assert t.hf_logprob_of_engine_token == pytest.approx(float(hf_logp[t.engine_token]), abs=1e-5)
    seq = TOKENS + run.tokens[:k + 1]
    eng_logits = Executor(engine).forward([seq])[0]["logits"][-1]
    assert t.engine_token == int(eng_logits.argmax())
    assert t.engine_logprob > t.engine_logprob_of_hf_token
    # the layer diffs at that step point at the embedding, in both modes
    assert [r.step for r in t.reports] == [k + 1, k + 1]
    assert [d.first_failing for d in t.layers] == ["embed", "embed"]
    # ... while the context phase is clean
    assert result.reports[0].passed and not result.passed
    back = DivergenceResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert back.tokens.step == t.step and back.tokens.reports[0] == t.reports[0]


def test_token_divergence_at_the_context_phase(engine_fp32, baseline_fp32, tmp_path):
    h = baseline_fp32.run(TOKENS, [], capture_steps=[]).tokens[0]
    x = (h + 7) % 259
    w = engine_fp32.network.weights["logits.weight"].clone()
    w[[h, x]] = w[[x, h]]  # the engine's logits of HF's choice and of x trade places
    engine = plant(engine_fp32, tmp_path / "swap", {"logits.weight": w})
    run = capture(engine, ["final_norm", "logits"], token_ids=TOKENS, steps=[0], baseline=baseline_fp32)
    t = token_divergence(run, tolerances=TIGHT)
    assert t.steps_checked == 1 and t.step == 0 and t.position == len(TOKENS) - 1
    assert (t.hf_token, t.engine_token) == (h, x)
    assert t.engine_logprob == pytest.approx(t.hf_logprob, abs=1e-5)  # the same value, moved to another token
    assert [r.step for r in t.reports] == [0] and t.layers[0].first_failing == "logits"
    assert t.reports[0].row("final_norm").passed


def _report(errors: list[float], passed: list[bool] | None = None, dtype: str = "float32") -> DiffReport:
    rows = []
    tol = Tolerances()
    for i, e in enumerate(errors):
        ref = torch.ones(4)
        m = compare_tensors(f"n{i}", ref * (1 + e), ref, atol=tol.atol[""], rtol=tol.rtol[""])
        v = judge(m, tol)
        if passed is not None:
            v.passed = passed[i]
        rows.append(DiffRow(f"n{i}", m, v))
    return DiffReport(mode="accumulated", step=0, rows=rows, token_ids=[1], positions=[0],
                      engine={"dtype": dtype}, model={"dtype": dtype})


def test_jump_is_over_the_running_max_and_the_dtype_floor():
    # a dip after a large error is no jump: the yardstick is the largest error so far
    d = layer_divergence(_report([0, 1e-7, 3e-3, 1e-4, 2e-3, 5e-2], passed=[True] * 6))
    assert d.first_jump == "n2"  # 3e-3 > 10 x the fp32 floor (1.2e-7) and the max so far
    assert d.jump_ratio == pytest.approx(3e-3 / 1.19209e-7, rel=1e-3)
    d = layer_divergence(_report([0, 1e-3, 3e-3, 5e-3, 9e-3, 1.5e-2], passed=[True] * 6, dtype="bfloat16"))
    assert d.first_jump is None  # bf16 rounding-level errors growing slowly: no jump
    assert d.floor == 2.0 ** -7
    d = layer_divergence(_report([0, 1e-3, 3e-3, 0.5], passed=[True, True, False, False], dtype="bfloat16"))
    assert d.first_failing == "n2" and d.first_jump == "n3" and d.layer is None
    assert LayerDivergence.from_dict(json.loads(json.dumps(d.to_dict(), allow_nan=False))) == d
    d = layer_divergence(_report([0, math.nan]))
    assert d.first_jump == "n1" and math.isinf(d.jump_ratio)
