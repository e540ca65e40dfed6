"""Tests for workbench.inspect.tolerances: the --atol/--rtol grammar, pattern specificity, judging."""

import json
import math

import pytest
import torch

from workbench.errors import PatternError, WorkbenchError
from workbench.inspect.metrics import compare_tensors
from workbench.inspect.tolerances import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ERROR_STATS,
    Tolerances,
    Verdict,
    check,
    judge,
)
from workbench.names import canonical_names

INF, NAN = math.inf, math.nan


# --- the grammar -------------------------------------------------------------------------


def test_defaults_are_polygraphys():
    t = Tolerances.parse(None, None)
    assert t.for_name("layers.0.mlp") == (DEFAULT_ATOL, DEFAULT_RTOL) == (1e-5, 1e-5)
    assert (t.error_stat, t.quantile) == ("elementwise", 0.99)


def test_parse_default_and_patterns():
    t = Tolerances.parse(["1e-3", "layers.*.mlp:1e-2", "12.attn:0.1"], ["0.5"])
    assert t.atol == {"": 1e-3, "layers.*.mlp": 1e-2, "12.attn": 0.1}
    assert t.rtol == {"": 0.5}
    assert t.for_name("layers.3.mlp") == (1e-2, 0.5)
    assert t.for_name("layers.12.attn") == (0.1, 0.5)
    assert t.for_name("embed") == (1e-3, 0.5)


def test_parse_empty_pattern_is_default_and_commas_split():
    t = Tolerances.parse([":2e-3", " 3-4.mlp, logits : 1e-2 "], None)
    assert t.atol == {"": 2e-3, "3-4.mlp": 1e-2, "logits": 1e-2}
    assert t.for_name("layers.4.mlp") == (1e-2, DEFAULT_RTOL)
    assert t.for_name("layers.5.mlp") == (2e-3, DEFAULT_RTOL)


def test_parse_accepts_a_single_string_and_inf():
    t = Tolerances.parse("logits:inf", None)
    assert t.for_name("logits")[0] == INF


@pytest.mark.parametrize(
    "atol, rtol, flag, bad",
    [
        (["abc"], None, "--atol", "abc"),
        (["layers.*.mlp:1e-2x"], None, "--atol", "layers.*.mlp:1e-2x"),
        (["layers.*.mlp:"], None, "--atol", "layers.*.mlp:"),
        (None, ["-1e-3"], "--rtol", "-1e-3"),
        (None, ["12.attn:nan"], "--rtol", "12.attn:nan"),
        (["layers.7-3:0.1"], None, "--atol", "layers.7-3:0.1"),  # empty range
    ],
)
def test_parse_errors_name_the_argument_and_the_item(atol, rtol, flag, bad):
    with pytest.raises(WorkbenchError) as err:
        Tolerances.parse(atol, rtol)
    assert flag in str(err.value) and repr(bad) in str(err.value)


def test_parse_error_stat_and_quantile():
    assert Tolerances.parse(None, None, "elemwise").error_stat == "elementwise"  # Polygraphy's spelling
    for stat in ERROR_STATS:
        assert Tolerances.parse(None, None, stat).error_stat == stat
    with pytest.raises(WorkbenchError, match=r"--error-stat 'p99'"):
        Tolerances.parse(None, None, "p99")
    with pytest.raises(WorkbenchError, match=r"--error-quantile"):
        Tolerances.parse(None, None, "quantile", 1.5)
    with pytest.raises(WorkbenchError, match=r"--error-quantile"):
        Tolerances.parse(None, None, "quantile", "high")
    assert Tolerances.parse(None, None, "quantile", "0.5").quantile == 0.5


# --- which pattern wins ------------------------------------------------------------------


def test_most_specific_pattern_wins():
    t = Tolerances.parse(
        ["1e-3", "all:0.5", "*.mlp:1e-2", "layers.1*:5e-2", "12.mlp:0.1", "layers.3-7:0.2"], None
    )
    assert t.for_name("layers.12.mlp")[0] == 0.1  # exact beats any glob
    assert t.for_name("layers.13.mlp")[0] == 5e-2  # the glob with more literal characters
    assert t.for_name("layers.2.mlp")[0] == 1e-2
    assert t.for_name("layers.5")[0] == 0.2  # a range beats `all`
    assert t.for_name("embed")[0] == 0.5  # `all` beats the default


def test_order_does_not_matter_across_specificity():
    t = Tolerances.parse(["12.mlp:0.1", "*.mlp:1e-2"], None)
    assert t.for_name("layers.12.mlp")[0] == 0.1


def test_later_item_wins_a_tie():
    assert Tolerances.parse(["*.mlp:1e-2", "*.mlp:2e-2"], None).for_name("layers.0.mlp")[0] == 2e-2
    # equally specific globs (7 literal characters each)
    assert Tolerances.parse(["layers.1*:1", "layers.*2:2"], None).for_name("layers.12")[0] == 2
    assert Tolerances.parse(["layers.*2:2", "layers.1*:1"], None).for_name("layers.12")[0] == 1
    # a repeated pattern moves to the end, so it beats a tie in between
    t = Tolerances.parse(["layers.1*:1", "layers.*2:2", "layers.1*:3"], None)
    assert t.for_name("layers.12")[0] == 3
    # the short and the full spelling of one name tie
    assert Tolerances.parse(["layers.12.mlp:1", "12.mlp:2"], None).for_name("layers.12.mlp")[0] == 2


def test_check_patterns_reports_typos():
    names = canonical_names(2)
    Tolerances.parse(["*.mlp:1e-2", "1.attn:0.1"], ["all:0"]).check_patterns(names)
    with pytest.raises(PatternError, match=r"--rtol.*1\.atn"):
        Tolerances.parse(None, ["1.atn:0.1"]).check_patterns(names)


def test_tolerances_round_trip_through_json():
    t = Tolerances.parse(["1e-3", "*.mlp:inf", "12.attn:0.1"], ["0"], "quantile", 0.9)
    back = Tolerances.from_dict(json.loads(json.dumps(t.to_dict(), allow_nan=False)))
    assert back == t
    assert list(back.atol) == ["", "*.mlp", "12.attn"]  # order breaks ties, so it is kept


# --- judging -----------------------------------------------------------------------------

# 100 ones; the engine is exact except one outlier of 1.0 at index 7.
REF = torch.ones(100)
ENG = REF.clone()
ENG[7] = 2.0


def _verdict(stat, atol="0.05", rtol="0", quantile=0.99, eng=ENG, ref=REF, name="layers.0.mlp"):
    return check(name, eng, ref, Tolerances.parse([atol], [rtol], stat, quantile))[1]


@pytest.mark.parametrize(
    "stat, quantile, passed, value",
    [
        ("elementwise", 0.99, False, 1.0),
        ("max", 0.99, False, 1.0),
        ("mean", 0.99, True, 0.01),
        ("median", 0.99, True, 0.0),
        ("quantile", 0.99, True, 0.01),  # position 98.01 between 0 and 1
        ("quantile", 0.999, False, 0.901),  # position 98.901
    ],
)
def test_each_error_stat_on_one_outlier(stat, quantile, passed, value):
    v = _verdict(stat, quantile=quantile)
    assert v.passed is passed
    assert v.stat_value_abs == pytest.approx(value)
    assert v.error_stat == stat and (v.atol, v.rtol) == (0.05, 0.0)


def test_reasons_are_short_phrases():
    assert _verdict("max").reason == "max |err| 1 > atol 0.05 and max rel 1 > rtol 0"
    assert _verdict("mean").reason == "mean |err| 0.01 <= atol 0.05"
    assert _verdict("quantile", quantile=0.999).reason.startswith("p99.9 |err| 0.901 > atol 0.05")
    assert _verdict("elementwise").reason == (
        "1 of 100 elements (1%) exceed atol 0.05 and rtol 0; max |err| 1 at (7,)"
    )
    assert _verdict("elementwise", atol="1").reason == "all 100 elements within atol 1 or rtol 0"


def test_rtol_alone_can_pass():
    assert _verdict("max", atol="0", rtol="1").passed  # max rel = 1 <= 1
    assert _verdict("max", atol="0", rtol="1").reason == "max rel 1 <= rtol 1"
    assert _verdict("elementwise", atol="0", rtol="1").passed
    assert not _verdict("elementwise", atol="0", rtol="0.99").passed


def test_elementwise_is_polygraphys_rule_not_isclose():
    # |err| 1 with |ref| 1: isclose allows 0.6 + 0.6 * 1 = 1.2, Polygraphy fails it (1 > 0.6 and 1 > 0.6).
    assert not _verdict("elementwise", atol="0.6", rtol="0.6").passed


def test_identical_tensors_pass_under_zero_tolerance():
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    for stat in ERROR_STATS:
        v = _verdict(stat, atol="0", rtol="0", eng=x, ref=x.clone())
        assert v.passed, (stat, v.reason)


@pytest.mark.parametrize("stat", ERROR_STATS)
def test_nan_always_fails(stat):
    eng = REF.clone()
    eng[3] = NAN
    eng[4] = NAN
    v = _verdict(stat, atol="inf", rtol="inf", eng=eng)
    assert not v.passed
    assert v.reason == "2 NaN in engine output"
    v = _verdict(stat, atol="inf", rtol="inf", eng=eng, ref=eng.clone())
    assert v.reason == "2 NaN in engine output; 2 NaN in reference output"


@pytest.mark.parametrize("stat", ERROR_STATS)
def test_inf_mismatch_always_fails_and_matching_infs_pass(stat):
    ref = REF.clone()
    ref[0] = -INF
    eng = ref.clone()
    assert _verdict(stat, atol="0", rtol="0", eng=eng, ref=ref).passed
    eng[1] = INF
    v = _verdict(stat, atol="inf", rtol="inf", eng=eng, ref=ref)
    assert not v.passed and v.reason == "1 Inf mismatch (Inf: engine 2, reference 1)"


def test_judge_uses_per_name_tolerances():
    t = Tolerances.parse(["0.05", "*.mlp:2"], None, "max")
    assert judge(compare_tensors("layers.0.mlp", ENG, REF), t).passed
    assert not judge(compare_tensors("layers.0.attn", ENG, REF), t).passed


def test_judge_recomputes_stale_metrics_from_tensors_or_refuses():
    t = Tolerances.parse(["2"], None)  # elementwise needs frac_outside at atol 2
    m = compare_tensors("x", ENG, REF)  # computed at atol 0
    assert m.frac_outside == 0.01
    with pytest.raises(ValueError, match="pass engine and reference"):
        judge(m, t)
    assert judge(m, t, ENG, REF).passed
    q = Tolerances.parse(["0.05"], None, "quantile", 0.5)
    with pytest.raises(ValueError):
        judge(m, q)  # computed at quantile 0.99
    assert judge(m, q, ENG, REF).stat_value_abs == 0.0


def test_verdict_round_trip_through_json():
    eng = REF.clone()
    eng[0] = NAN
    for v in (_verdict("max"), _verdict("max", eng=eng), _verdict("median", atol="inf")):
        back = Verdict.from_dict(json.loads(json.dumps(v.to_dict(), allow_nan=False)))
        assert back.to_dict() == v.to_dict()
        assert back.passed is v.passed
