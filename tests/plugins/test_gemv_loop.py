"""The one-row GEMV whose programs loop over row tiles ("tma_loop", plugins/gemv_tma.py's _gemv_tma_loop) against
the GEMV's other tiles and the torch references: float and int8 weights, the fused activation, a bias, a last tile
past the weights' edge, several tiles a program."""

from __future__ import annotations

import pytest
import torch

from tests.plugins.conftest import rel_err
from tests.plugins.test_gemv import DEV, _int8, _launches, _w, _x, gm
from workbench.runtime import quant_ops


@pytest.mark.parametrize("fmt", ["float", "int8"])
@pytest.mark.parametrize("n,swiglu,bias", [(40, False, False), (300, False, True), (200, True, False)])
@pytest.mark.parametrize("per_sm", [1, 3])
def test_loop_tiles_give_the_tma_tiles_bits(monkeypatch, fmt, n, swiglu, bias, per_sm):
    # the same tiles and the same order of sums a tile as "tma" (its programs just take several tiles each): the
    # same bits; n is not a multiple of the tile, and on the CPU (2 "SMs") each program takes several tiles
    k = 512
    x = _x(1, k, torch.bfloat16)
    b = torch.randn(n // 2 if swiglu else n, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16).to(DEV) \
        if bias else None
    loop = (16, 128, 1, 4, 3, "tma_loop", per_sm)
    tma = (16, 128, 1, 4, 3, "tma")
    seen = _launches(monkeypatch, "_gemv_tma_loop", "WQ")
    if fmt == "float":
        w = _w(n, k).to(torch.bfloat16).to(DEV)
        got, want = (gm.gemv(x, w, b, cfg, swiglu) for cfg in (loop, tma))
        ref = gm.gemv_ref(x, w, b, swiglu=swiglu)
    else:
        ops = _int8(n, k)
        got, want = (gm.w8a16_gemv(x, ops["qweight"], ops["scales"], b, cfg, swiglu) for cfg in (loop, tma))
        ref = gm.w8a16_gemv_ref(x, ops["qweight"], ops["scales"], b, swiglu=swiglu)
    assert seen == [(0 if fmt == "float" else 8,)]
    assert got.shape == ref.shape == (1, n // 2 if swiglu else n)
    assert torch.equal(got, want)
    assert rel_err(got, ref) < 2e-2


def test_loop_config_runs_the_tma_tiles_where_it_cannot_loop(monkeypatch):
    # several rows, a split K or a norm in the prologue: the plain TMA tiles (or the dot) run it instead
    n, k = 64, 256
    w = _w(n, k).to(torch.bfloat16).to(DEV)
    seen = _launches(monkeypatch, "_gemv_tma_loop", "WQ")
    x = _x(1, k, torch.bfloat16)
    y = gm.gemv(x, w, None, (16, 64, 2, 4, 3, "tma_loop"))
    assert rel_err(y, gm.gemv_ref(x, w)) < 2e-2
    x3 = _x(3, k, torch.bfloat16)
    assert rel_err(gm.gemv(x3, w, None, (16, 64, 1, 4, 3, "tma_loop")), gm.gemv_ref(x3, w)) < 2e-2
    res = _x(1, k, torch.bfloat16, seed=4)
    nw = torch.ones(k, dtype=torch.bfloat16, device=DEV)
    h, y = gm.gemv(x, w, None, (16, 64, 1, 4, 3, "tma_loop"), norm=(res, nw, 1e-5))
    assert h.shape == x.shape and y.shape == (1, n)
    assert seen == []
    assert not gm.takes_norm((16, 64, 1, 4, 3, "tma_loop"), gm.INT8)


def test_int8_loop_tiles_match_the_quantized_reference():
    # int8 tiles of x taken by loads (k not a multiple of 64) as well as by TMA
    n, k = 48, 96
    ops = _int8(n, k)
    x = _x(1, k, torch.float32)
    y = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, (16, 32, 1, 4, 2, "tma_loop", 1))
    ref = quant_ops.w8a16(x, ops)
    assert rel_err(y, ref) < 1e-5
