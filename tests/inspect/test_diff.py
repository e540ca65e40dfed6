"""`diff`: engine vs HF rows in layer order, both modes, steps, reports as JSON, and clear errors."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from tests.inspect.conftest import TOKENS, make_tiny_checkpoint
from workbench.errors import PatternError, WorkbenchError
from workbench.inspect.baseline import Baseline
from workbench.inspect.diff import DEFAULT_PROMPT, DiffReport, diff, diffable_names, parse_steps
from workbench.inspect.tolerances import Tolerances
from workbench.names import canonical_names

TIGHT = Tolerances.parse(["1e-5"], ["1e-5"])


def test_fp32_passes_tight_tolerances_in_both_modes(engine_fp32, baseline_fp32):
    reports = diff(engine_fp32, modes=("accumulated", "local"), steps=[0, 1, 3], token_ids=TOKENS, tolerances=TIGHT,
                   baseline=baseline_fp32)
    assert [(r.step, r.mode) for r in reports] == [(s, m) for s in (0, 1, 3) for m in ("accumulated", "local")]
    for r in reports:
        assert r.names == canonical_names(3)  # every name, in layer order
        assert r.passed, [(x.name, x.verdict.reason) for x in r.failures]
        assert all(x.metrics.rel_l2 < 1e-5 for x in r.rows)
    assert reports[0].positions == list(range(len(TOKENS)))
    assert reports[0].rows[-1].metrics.shape == (len(TOKENS), 272)
    step3 = reports[4]
    assert step3.positions == [len(TOKENS) + 2] and step3.rows[0].metrics.shape == (1, 64)
    assert step3.token_ids[:len(TOKENS)] == TOKENS and len(step3.token_ids) == len(TOKENS) + 3
    assert reports[0].engine["dtype"] == "float32" and reports[0].model["num_layers"] == 3


def test_bf16_engine_shows_rounding_error_against_an_fp32_baseline(engine_bf16):
    (report,) = diff(engine_bf16, token_ids=TOKENS, tolerances=TIGHT, baseline_dtype="fp32")
    errs = {r.name: r.metrics.rel_l2 for r in report.rows}
    assert report.model["dtype"] == "float32" and report.engine["dtype"] == "bfloat16"
    assert all(e > 1e-4 for e in errs.values())  # bf16 rounding everywhere: the weights themselves are rounded
    assert not report.passed
    # errors accumulate through the residual stream
    assert errs["layers.2"] > errs["layers.0"] and errs["logits"] > errs["embed"]


def test_bf16_engine_against_bf16_hf_runs_the_same_kernels(engine_bf16):
    # The torch backend uses the same PyTorch ops as HF's eager Llama in the same dtype, so
    # the context phase matches HF bf16 bit for bit; a real backend would show its own error here.
    (report,) = diff(engine_bf16, token_ids=TOKENS, tolerances=TIGHT)
    assert report.model["dtype"] == "bfloat16"
    assert report.passed and max(r.metrics.max_abs_err for r in report.rows) < 1e-2


def test_layer_patterns_select_rows_in_layer_order(engine_fp32, baseline_fp32):
    (report,) = diff(engine_fp32, ["*.mlp", "1.attn,logits", "embed"], token_ids=TOKENS, baseline=baseline_fp32)
    assert report.names == ["embed", "layers.0.mlp", "layers.1.attn", "layers.1.mlp", "layers.2.mlp", "logits"]


def test_report_round_trips_through_json(engine_fp32, baseline_fp32):
    reports = diff(engine_fp32, "1-2.attn", modes=("accumulated", "local"), steps=[0, 2], token_ids=TOKENS,
                   baseline=baseline_fp32)
    for r in reports:
        text = json.dumps(r.to_dict(), allow_nan=False)  # JSON-safe: no NaN/Infinity literals
        back = DiffReport.from_dict(json.loads(text))
        assert back == r
    assert reports[0].to_dict()["rows"][0]["verdict"]["passed"] is True


def test_nonfinite_metrics_survive_json(engine_fp32, baseline_fp32, tmp_path):
    from tests.inspect.conftest import plant

    ws = engine_fp32.network.weights
    bad = plant(engine_fp32, tmp_path / "nan", {"layers.1.mlp.down.weight": ws["layers.1.mlp.down.weight"] * math.nan})
    (report,) = diff(bad, ["1.mlp", "logits"], token_ids=TOKENS, baseline=baseline_fp32)
    assert not report.passed and report.row("layers.1.mlp").metrics.nan_engine > 0
    back = DiffReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert math.isinf(back.row("logits").metrics.rel_l2)


def test_prompt_is_tokenized_with_the_engine_tokenizer(engine_fp32, baseline_fp32):
    (report,) = diff(engine_fp32, "embed", prompt="Hello", baseline=baseline_fp32)
    assert report.token_ids == [42, 71, 78, 78, 81] and report.prompt == "Hello"
    (default,) = diff(engine_fp32, "embed", baseline=baseline_fp32)
    assert default.prompt == DEFAULT_PROMPT and len(default.token_ids) == len(DEFAULT_PROMPT.encode())


def test_unknown_names_get_suggestions(engine_fp32):
    with pytest.raises(PatternError, match="did you mean layers.1.mlp"):
        diff(engine_fp32, "1.mpl", token_ids=TOKENS)
    with pytest.raises(PatternError, match="engine-internal nodes .*layers.0.attn.q_rope.* no HF counterpart"):
        diff(engine_fp32, "0.attn.q_rope", token_ids=TOKENS)
    with pytest.raises(PatternError, match="--atol"):
        diff(engine_fp32, token_ids=TOKENS, tolerances=Tolerances.parse(["7.mlp:1e-3"], None))


def test_bad_mode_and_too_long(engine_fp32, baseline_fp32):
    with pytest.raises(WorkbenchError, match="--mode 'fast'"):
        diff(engine_fp32, "embed", modes="fast", token_ids=TOKENS, baseline=baseline_fp32)
    with pytest.raises(WorkbenchError, match="exceed the engine's max_seq_len"):
        diff(engine_fp32, "embed", steps=[5000], token_ids=TOKENS, baseline=baseline_fp32)


def test_a_mismatched_tokenizer_is_refused(engine_fp32, tmp_path):
    from workbench.builder.build import build_engine

    ckpt = tmp_path / "ckpt"
    shutil.copytree(engine_fp32.source["checkpoint"], ckpt)
    engine = build_engine(ckpt, tmp_path / "engine")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["model"]["vocab"] = {k: (v + 1) % len(tok["model"]["vocab"]) for k, v in tok["model"]["vocab"].items()}
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(WorkbenchError, match="tokenizer.json: differs from the checkpoint's"):
        diff(engine, "embed", prompt="Hi")


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    from workbench.builder.build import build_engine

    ckpt = make_tiny_checkpoint(tmp_path / "small_vocab", vocab_size=200, num_hidden_layers=1)
    engine = build_engine(ckpt, tmp_path / "engine")
    with pytest.raises(WorkbenchError, match="tokenizer has 259 tokens but the model's vocabulary is 200"):
        diff(engine, "embed", prompt="Hi")


def test_a_baseline_of_another_model_is_refused(engine_fp32, tmp_path):
    other = make_tiny_checkpoint(tmp_path / "wide", hidden_size=32, intermediate_size=64, tokenizer=False)
    with pytest.raises(WorkbenchError, match="hidden_size 64 \\(engine\\) vs 32 \\(checkpoint\\)"):
        diff(engine_fp32, token_ids=TOKENS, baseline=Baseline.for_engine(engine_fp32, other))


def test_diffable_names_are_the_canonical_ones(engine_fp32):
    assert diffable_names(engine_fp32) == canonical_names(3)


@pytest.mark.parametrize("text, steps", [(None, [0]), ("0", [0]), ("3", [0, 1, 2, 3]), ("2,", [2]), ("0,3,5-7", [0, 3, 5, 6, 7]),
                                         ("1 4", [1, 4]), (2, [0, 1, 2]), ([4, 1], [1, 4])])
def test_parse_steps(text, steps):
    assert parse_steps(text) == steps


@pytest.mark.parametrize("text", ["x", "-1", "3-1", ","])
def test_parse_steps_rejects(text):
    with pytest.raises(WorkbenchError, match="--steps"):
        parse_steps(text)


@pytest.mark.slow
def test_smollm2_bf16_error_grows_through_layers(tmp_path):
    from workbench.builder.build import build_engine
    from workbench.builder.config import BuildConfig
    from workbench.default_model import default_checkpoint

    engine = build_engine(default_checkpoint(), tmp_path / "bf16", BuildConfig(dtype="bf16", max_seq_len=256))
    (report,) = diff(engine, ["embed", "layers.*", "logits"], tolerances=TIGHT, baseline_dtype="fp32")
    # The residual stream's absolute error grows layer after layer. (Its rel L2 does not: from
    # layer ~10 on, a few huge outlier channels dominate the stream's norm.)
    resid = [report.row(f"layers.{i}").metrics.mean_abs_err for i in range(30)]
    assert all(e > 0 for e in resid)
    assert sum(resid[20:]) > 3 * sum(resid[:10])
    assert sum(b > a for a, b in zip(resid, resid[1:])) >= 24
    assert report.row("logits").metrics.rel_l2 > 1e-3


def test_an_edited_config_shows_as_a_report_warning(engine_fp32, tmp_path):
    ckpt = tmp_path / "edited"
    shutil.copytree(engine_fp32.source["checkpoint"], ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "note": "edited"}))
    (report,) = diff(engine_fp32, "logits", token_ids=TOKENS, baseline=Baseline.for_engine(engine_fp32, ckpt))
    assert report.passed and len(report.warnings) == 1 and "changed since the engine was built" in report.warnings[0]
