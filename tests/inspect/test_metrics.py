"""Known-answer tests for workbench.inspect.metrics (hand-computed small tensors)."""

import json
import math

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.inspect.metrics import REL_EPS, TensorMetrics, TensorStats, compare_tensors

INF, NAN = math.inf, math.nan

# engine a, reference b:  a - b = [[0, 0.5], [-1, 0]]
A = torch.tensor([[1.0, 2.5], [3.0, -2.0]])
B = torch.tensor([[1.0, 2.0], [4.0, -2.0]])


def test_known_answer_error_metrics():
    m = compare_tensors("layers.0.mlp", A, B, atol=0.6, quantile=0.99)
    assert m.name == "layers.0.mlp"
    assert m.shape == (2, 2)
    assert m.max_abs_err == 1.0
    assert m.max_abs_index == (1, 0)
    assert m.max_rel_err == 0.25  # 1 / 4 and 0.5 / 2
    assert m.mean_abs_err == pytest.approx(1.5 / 4)
    assert m.mean_rel_err == pytest.approx(0.5 / 4)
    assert m.median_abs_err == pytest.approx(0.25)  # sorted [0, 0, 0.5, 1]
    assert m.median_rel_err == pytest.approx(0.125)  # sorted [0, 0, 0.25, 0.25]
    assert m.quantile_abs_err == pytest.approx(0.5 + 0.5 * 0.97)  # position 0.99 * 3 = 2.97
    assert m.quantile_rel_err == pytest.approx(0.25)
    assert m.rel_l2 == pytest.approx(math.sqrt(1.25) / 5)  # ||d||^2 = 1.25, ||b||^2 = 25
    assert m.sqnr_db == pytest.approx(10 * math.log10(25 / 1.25))
    assert m.cosine == pytest.approx(22 / (4.5 * 5))  # a.b = 22, ||a|| = 4.5, ||b|| = 5
    assert m.frac_outside == 0.25  # only |err| 1.0 > 0.6 (and rel 0.25 > rtol 0)
    assert (m.nan_engine, m.inf_engine, m.nan_ref, m.inf_ref, m.inf_mismatch) == (0, 0, 0, 0, 0)
    assert (m.atol, m.rtol, m.quantile) == (0.6, 0.0, 0.99)


def test_known_answer_tensor_stats():
    m = compare_tensors("x", A, B)
    e, r = m.engine_stats, m.ref_stats
    assert (e.min, e.max, e.absmax) == (-2.0, 3.0, 3.0)
    assert e.mean == pytest.approx(1.125)
    assert e.std == pytest.approx(math.sqrt(15.1875 / 4))  # population std
    assert (r.min, r.max, r.absmax) == (-2.0, 4.0, 4.0)
    assert r.mean == pytest.approx(1.25)
    assert r.std == pytest.approx(np.std([1.0, 2.0, 4.0, -2.0]))


@pytest.mark.parametrize(
    "atol, rtol, expected",
    [
        (0.6, 0.0, 0.25),  # |err| 1 > 0.6
        (0.6, 0.3, 0.0),  # rel 0.25 <= 0.3 rescues it
        (0.0, 0.2, 0.5),  # both rel 0.25 > 0.2, both |err| > 0
        (1.0, 0.0, 0.0),  # |err| > atol is strict
        # Polygraphy's rule, not isclose: |err| 1 <= 0.6 + 0.6 * 4, yet it exceeds both.
        (0.6, 0.2, 0.25),
    ],
)
def test_frac_outside_needs_both_tolerances_exceeded(atol, rtol, expected):
    assert compare_tensors("x", A, B, atol=atol, rtol=rtol).frac_outside == pytest.approx(expected)


def test_identical_tensors():
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    m = compare_tensors("x", x, x.clone())
    assert m.max_abs_err == 0.0 and m.max_rel_err == 0.0
    assert m.mean_abs_err == 0.0 and m.median_abs_err == 0.0 and m.quantile_abs_err == 0.0
    assert m.rel_l2 == 0.0
    assert m.sqnr_db == INF
    assert m.cosine == pytest.approx(1.0)
    assert m.frac_outside == 0.0  # zero tolerance


def test_zero_tensors_and_zero_reference():
    z = torch.zeros(4)
    m = compare_tensors("x", z, z)
    assert (m.cosine, m.sqnr_db, m.rel_l2) == (1.0, INF, 0.0)
    m = compare_tensors("x", torch.tensor([1e-3, 1.0]), torch.tensor([0.0, 1.0]))
    assert m.max_rel_err == pytest.approx(1e-3 / REL_EPS)  # Polygraphy's epsilon for exact zeros
    m = compare_tensors("x", torch.ones(3), torch.zeros(3))
    assert (m.cosine, m.sqnr_db, m.rel_l2) == (0.0, -INF, INF)


def test_median_of_odd_count_and_opposite_vectors():
    m = compare_tensors("x", torch.tensor([1.0, 3.0, 10.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert m.median_abs_err == 2.0  # sorted [0, 2, 9]
    assert compare_tensors("x", -A, A).cosine == pytest.approx(-1.0)


def test_engine_reshaped_to_reference_shape():
    m = compare_tensors("x", A.reshape(1, 4), B)
    assert m.shape == (2, 2) and m.max_abs_index == (1, 0)
    m = compare_tensors("x", A.reshape(1, 2, 2), B.reshape(4))
    assert m.shape == (4,) and m.max_abs_index == (2,)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(WorkbenchError, match=r"layers\.1\.attn.*\(1, 3\).*\(4,\)"):
        compare_tensors("layers.1.attn", torch.zeros(1, 3), torch.zeros(4))


def test_dtypes_and_numpy_inputs():
    m = compare_tensors("x", A.to(torch.bfloat16), B.numpy())
    assert m.max_abs_err == 1.0
    m = compare_tensors("x", torch.tensor([1, 2]), torch.tensor([True, True]))
    assert m.max_abs_err == 1.0


def test_empty_and_scalar_tensors():
    m = compare_tensors("x", torch.zeros(0, 3), torch.zeros(0, 3))
    assert m.max_abs_index == () and m.max_abs_err == 0.0 and m.frac_outside == 0.0
    m = compare_tensors("x", torch.tensor(2.0), torch.tensor(1.5))
    assert m.shape == () and m.max_abs_index == () and m.max_abs_err == 0.5


def test_nan_in_engine_is_infinite_error():
    a = torch.tensor([1.0, NAN, 3.0, 4.0, 5.0])
    b = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    m = compare_tensors("x", a, b, atol=INF, rtol=INF)
    assert (m.nan_engine, m.nan_ref, m.inf_mismatch) == (1, 0, 0)
    assert m.max_abs_err == INF and m.max_abs_index == (1,)
    assert m.max_rel_err == INF and m.mean_abs_err == INF
    assert m.median_abs_err == 0.0  # one bad element does not move the median
    assert m.frac_outside == pytest.approx(0.2)  # even with infinite tolerances
    assert m.rel_l2 == INF and m.sqnr_db == -INF
    assert m.cosine == pytest.approx(1.0)  # over the finite pairs
    assert m.engine_stats.max == 5.0  # stats skip the NaN
    assert m.has_nonfinite_problem


def test_nan_in_both_at_same_place_is_still_a_problem():
    a = torch.tensor([NAN, 1.0])
    m = compare_tensors("x", a, a.clone())
    assert (m.nan_engine, m.nan_ref) == (1, 1)
    assert m.max_abs_err == INF and m.has_nonfinite_problem


def test_matching_infs_are_zero_error():
    a = torch.tensor([-INF, 1.0, INF])
    m = compare_tensors("x", a, a.clone())
    assert (m.inf_engine, m.inf_ref, m.inf_mismatch) == (2, 2, 0)
    assert m.max_abs_err == 0.0 and m.max_rel_err == 0.0 and m.frac_outside == 0.0
    assert m.sqnr_db == INF and m.cosine == pytest.approx(1.0)
    assert not m.has_nonfinite_problem


@pytest.mark.parametrize("a, b", [([INF, 1.0], [1.0, 1.0]), ([INF, 1.0], [-INF, 1.0]), ([1.0, 1.0], [-INF, 1.0])])
def test_inf_mismatch(a, b):
    m = compare_tensors("x", torch.tensor(a), torch.tensor(b))
    assert m.inf_mismatch == 1
    assert m.max_abs_err == INF and m.max_abs_index == (0,)
    assert m.has_nonfinite_problem


def test_all_nan_does_not_crash():
    m = compare_tensors("x", torch.full((3,), NAN), torch.full((3,), NAN))
    assert math.isnan(m.cosine) and math.isnan(m.engine_stats.mean)
    assert m.max_abs_err == INF


def _json_round_trip(m: TensorMetrics) -> TensorMetrics:
    return TensorMetrics.from_dict(json.loads(json.dumps(m.to_dict(), allow_nan=False)))


def test_round_trip_through_json():
    m = compare_tensors("layers.3.attn", A, B, atol=0.1, rtol=0.2, quantile=0.9)
    back = _json_round_trip(m)
    assert back == m
    assert isinstance(back.shape, tuple) and isinstance(back.ref_stats, TensorStats)


def test_round_trip_with_non_finite_values():
    m = compare_tensors("x", torch.tensor([NAN, INF, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    d = m.to_dict()
    assert d["max_abs_err"] == "inf" and d["sqnr_db"] == "-inf"
    back = _json_round_trip(m)
    assert back.to_dict() == d  # NaN != NaN, so compare the encoded form
    assert back.max_abs_err == INF and back.sqnr_db == -INF
    m = compare_tensors("x", torch.full((2,), NAN), torch.ones(2))
    assert m.to_dict()["engine_stats"]["mean"] == "nan"
    assert math.isnan(_json_round_trip(m).engine_stats.mean)


def test_logits_sized_tensor():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(32, 49152, generator=g)
    eng = (ref + 1e-3 * torch.randn(32, 49152, generator=g)).to(torch.bfloat16)
    m = compare_tensors("logits", eng, ref, atol=1e-2, quantile=0.9)
    err = (eng.double() - ref.double()).abs().numpy()
    assert m.max_abs_err == pytest.approx(err.max())
    assert m.median_abs_err == pytest.approx(np.median(err))
    assert m.quantile_abs_err == pytest.approx(np.quantile(err, 0.9))
    assert m.frac_outside == pytest.approx((err > 1e-2).mean())
