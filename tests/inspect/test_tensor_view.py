"""tensor_view: side statistics, the error histogram, worst coordinates and their neighbourhood; token_steps."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.inspect.tensor_view import error_histogram, first_token_divergence, tensor_view, token_steps


def test_worst_coordinates_and_neighbourhood_along_the_last_axis():
    ref = torch.zeros(3, 10)
    eng = ref.clone()
    eng[1, 7] = 0.5  # the worst
    eng[2, 0] = 0.25
    eng[0, 3] = 1e-3
    v = tensor_view("x", eng, ref, worst=3, radius=2)
    assert [c.index for c in v.worst] == [(1, 7), (2, 0), (0, 3)]
    assert v.worst[0].engine == 0.5 and v.worst[0].reference == 0.0 and v.worst[0].abs_err == 0.5
    assert [c.index for c in v.around] == [(1, 5), (1, 6), (1, 7), (1, 8), (1, 9)]  # clipped at the end
    assert v.around_axis == 1
    assert v.engine.shape == (3, 10) and v.engine.stats.max == 0.5 and v.reference.zeros == 30


def test_histogram_counts_per_decade_zeros_and_nonfinite():
    err = torch.tensor([0.0, 0.0, 2e-6, 3e-6, 4e-3, math.inf, math.nan], dtype=torch.float64)
    bins = error_histogram(err)
    assert bins[0].label == "0" and bins[0].count == 2
    by_label = {b.label: b.count for b in bins}
    assert by_label["1e-06"] == 2 and by_label["1e-03"] == 1 and by_label["1e-05"] == 0
    assert by_label["inf/nan"] == 2
    assert sum(b.count for b in bins) == err.numel()


def test_histogram_folds_small_errors_into_the_lowest_bin():
    err = torch.tensor([1e-12, 1e-1, 5.0], dtype=torch.float64)
    bins = error_histogram(err, max_bins=3)
    assert [b.label for b in bins] == ["0", "<1e-01", "1e-01", "1e+00"]
    assert [b.count for b in bins] == [0, 1, 1, 1]


def test_nan_and_mismatched_inf_are_infinite_errors_matching_inf_is_zero():
    ref = torch.tensor([[1.0, -math.inf, 2.0, 3.0]])
    eng = torch.tensor([[1.0, -math.inf, math.nan, math.inf]])
    v = tensor_view("x", eng, ref)
    assert v.worst[0].abs_err == math.inf and v.worst[0].index in ((0, 2), (0, 3))
    assert v.engine.nan == 1 and v.engine.inf == 2 and v.reference.inf == 1
    assert v.histogram[0].count == 2 and v.histogram[-1].label == "inf/nan" and v.histogram[-1].count == 2


def test_flattened_engine_shape_is_reshaped_and_a_mismatch_is_an_error():
    ref = torch.arange(6.0).reshape(2, 3)
    v = tensor_view("x", torch.arange(6.0), ref)
    assert v.engine.shape == (2, 3) and v.worst[0].abs_err == 0
    with pytest.raises(WorkbenchError, match="different numbers of elements"):
        tensor_view("x", torch.zeros(5), ref)


def test_token_steps_read_the_last_row_and_find_the_divergence():
    hf = {0: torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]), 1: torch.tensor([[0.0, 3.0, 0.0]])}
    eng = {0: torch.tensor([[9.0, 0.0, 0.0], [4.0, 0.0, 0.0]]), 1: torch.tensor([[0.0, 1.0, 2.0]])}
    steps = token_steps(hf, eng)
    assert [(s.step, s.hf_token, s.engine_token) for s in steps] == [(0, 0, 0), (1, 1, 2)]
    first = first_token_divergence(steps)
    assert first.step == 1 and not first.matches
    assert first.engine_logprob_of_hf < first.engine_logprob
    assert math.isclose(first.hf_logprob, float(torch.log_softmax(torch.tensor([0.0, 3.0, 0.0]), 0)[1]), rel_tol=1e-6)
    assert first_token_divergence(steps[:1]) is None
