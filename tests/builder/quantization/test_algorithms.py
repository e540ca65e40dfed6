"""GPTQ, AWQ and SmoothQuant do what they are for, on one linear layer and calibration-like data:
the output error on held-out rows from the same distribution as the calibration rows."""

from __future__ import annotations

import pytest
import torch

from workbench.builder.quantization import awq
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.awq import search_scales
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.gptq import gptq
from workbench.builder.quantization.int4_wo import rtn
from workbench.builder.quantization.smoothquant import quantize_layer
from workbench.runtime import quant_ops

K, N, GS = 256, 192, 128


def _activations(n: int, g: torch.Generator) -> torch.Tensor:
    """Correlated features with a few outlier channels, like a norm's output in an LLM."""
    mix = torch.randn(K, K, generator=torch.Generator().manual_seed(7)) / K**0.5
    x = torch.randn(n, K, generator=g) @ mix + 0.3 * torch.randn(n, K, generator=g)
    x[:, [3, 77, 200]] *= 15.0
    return x


@pytest.fixture(scope="module")
def layer():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, K, generator=g) * 0.05
    return w, _activations(2048, g), _activations(1024, g)  # weight, calibration rows, held-out rows


def _err(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    ref = x @ w.T
    return float((x @ wq.T - ref).norm() / ref.norm())


def _run_w4(x, q, s, z, smooth=None) -> torch.Tensor:
    ops = {"qweight": nq.pack_int4(q), "scales": s, "zeros": z.to(torch.uint8)}
    if smooth is not None:
        ops["smooth"] = smooth
    return quant_ops.w4a16(x, ops, GS)


def test_gptq_beats_round_to_nearest(layer):
    w, calib, test = layer
    rtn_err = _err(test, w, nq.dequantize_int4(*rtn(w, GS), GS))
    for act_order in (False, True):
        q, s, z = gptq(w, calib.T @ calib / len(calib), GS, act_order=act_order)
        y = _run_w4(test, q, s, z)
        gptq_err = float((y - test @ w.T).norm() / (test @ w.T).norm())
        assert gptq_err < 0.9 * rtn_err, (act_order, gptq_err, rtn_err)


def test_gptq_without_hessian_information_is_round_to_nearest(layer):
    w = layer[0]
    q, s, z = gptq(w, torch.eye(K), GS, damp=0.0)  # identity Hessian: no error to propagate into
    q_rtn, s_rtn, z_rtn = rtn(w, GS)
    assert torch.equal(q, q_rtn) and torch.equal(s, s_rtn) and torch.equal(z, z_rtn)


def test_awq_beats_round_to_nearest(layer):
    w, calib, test = layer
    rows = calib[torch.randperm(len(calib), generator=torch.Generator().manual_seed(0))[:256]]
    s, ratio, errors = search_scales(w, rows, calib.abs().mean(0), GS)
    assert ratio > 0 and min(errors) < errors[0]  # errors[0] is ratio 0: plain round-to-nearest
    q, scales, zeros = rtn(w * s[None, :], GS)
    y = _run_w4(test, q, scales, zeros, smooth=s)
    awq_err = float((y - test @ w.T).norm() / (test @ w.T).norm())
    rtn_err = _err(test, w, nq.dequantize_int4(*rtn(w, GS), GS))
    assert awq_err < 0.9 * rtn_err, (awq_err, rtn_err)


def test_awq_clipping_lowers_the_error_on_calibration_rows(layer):
    w, calib, test = layer
    rows = calib[torch.randperm(len(calib), generator=torch.Generator().manual_seed(0))[:256]]
    errs = {}
    for clip in (False, True):
        q = awq.quantize_layer(w, rows, calib.abs().mean(0), QuantConfig(method="awq", awq_clip=clip))
        errs[clip] = [float((quant_ops.w4a16(x, q.operands, GS) - x @ w.T).norm() / (x @ w.T).norm()) for x in (rows, test)]
    assert errs[True][0] < 0.95 * errs[False][0], errs  # on the rows the search saw
    assert errs[True][1] < 0.95 * errs[False][1], errs  # and on held-out rows
    shrink, per_ratio = awq.search_clip(w, rows, GS)
    assert shrink.shape == (N, K // GS) and 0.5 <= shrink.min() and shrink.max() <= 1.0 and (shrink < 1).float().mean() > 0.5
    assert torch.all(per_ratio.min(0).values <= per_ratio[0])  # ratio 1.0 (no clipping) is always a candidate


def test_awq_clip_search_handles_a_short_last_group():
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(8, 160, generator=g), torch.randn(64, 160, generator=g)  # groups of 128 and 32
    shrink, per_ratio = awq.search_clip(w, x, GS)
    assert shrink.shape == (8, 2) and per_ratio.shape == (len(awq.CLIP_RATIOS), 8, 2)
    scales, zeros = nq.int4_group_params(w, GS, shrink)
    full_s, _ = nq.int4_group_params(w, GS)
    assert torch.all(scales <= full_s + 1e-7) and scales.shape == (8, 2)


def test_smoothquant_migration_helps_static_int8(layer):
    w, calib, test = layer
    amax = calib.abs().amax(0)
    errs = {}
    for alpha in (0.0, 0.5):
        q = quantize_layer(w, amax, QuantConfig(method="smoothquant", sq_alpha=alpha, sq_acts="per_tensor"))
        y = quant_ops.w8a8(test, q.operands, "per_tensor")
        errs[alpha] = float((y - test @ w.T).norm() / (test @ w.T).norm())
    assert errs[0.5] < 0.7 * errs[0.0], errs
