"""The decode GEMV (workbench/plugins/gemv.py) for float and weight-only quantized formats, both ways of
multiplying a tile (tensor-core dot, fp32 multiply-adds), against the torch references."""

from __future__ import annotations

import pytest
import torch

from tests.plugins.conftest import TOL, rel_err
from workbench.builder.quantization import numerics as nq
from workbench.runtime import quant_ops

gm = pytest.importorskip("workbench.plugins.gemv")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _x(m, k, dtype, seed=1):
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed))
    x[:, 5] *= 8  # an outlier channel
    return x.to(dtype).to(DEV)


def _w(n, k, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


def _int8(n, k):
    w = _w(n, k)
    s = nq.safe_scale(w.abs().amax(1), 127)
    return {"qweight": nq.quantize_int8(w, s[:, None]).to(DEV), "scales": s.to(DEV)}


def _int4(n, k, group):
    w = _w(n, k)
    s, z = nq.int4_group_params(w, group)
    q = nq.pack_int4(nq.quantize_int4(w, s, z, group))
    return {"qweight": q.to(DEV), "scales": s.to(DEV), "zeros": z.to(torch.uint8).to(DEV)}


def _launches(monkeypatch, name, *keys):
    """The values of `keys` (a tuple a launch) of every launch of the kernel gm.<name>, which still runs."""
    seen, kernel = [], getattr(gm, name)

    class Spy:
        def __getitem__(self, grid):
            return lambda *a, **kw: seen.append(tuple(kw[key] for key in keys)) or kernel[grid](*a, **kw)

    monkeypatch.setattr(gm, name, Spy())
    return seen


def _bias(n, dtype, on):
    return torch.randn(n, generator=torch.Generator().manual_seed(3)).to(dtype).to(DEV) if on else None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,split,bias,dot", [(1, 1, False, False), (1, 3, True, False), (1, 2, False, True),
                                              (3, 1, True, True), (8, 2, False, True)])
@pytest.mark.parametrize("stages", [1, 3])  # one row, 3: the next word tile prefetched into registers
def test_w8a16_gemv_matches_reference(dtype, m, split, bias, dot, stages):
    ops = _int8(40, 192)
    b = _bias(40, dtype, bias)
    x = _x(m, 192, dtype)
    y = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], b, (16, 32, split, 4, stages, dot))
    ref = quant_ops.w8a16(x, {**ops, **({"bias": b} if bias else {})})
    assert y.dtype == dtype and y.shape == (m, 40)
    assert rel_err(y, ref) < (TOL[dtype] if dtype == torch.float32 else 8e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [128, 32, 16])  # 16: several groups per tile (the kernel's 2-D scale load)
@pytest.mark.parametrize("m,split,dot,stages", [(1, 1, False, 1), (1, 2, False, 1), (1, 1, False, 2), (1, 2, False, 3),
                                                (1, 1, True, 1), (5, 2, True, 1)])
def test_w4a16_gemv_matches_reference(dtype, group, m, split, dot, stages):
    ops = _int4(24, 256, group)
    x = _x(m, 256, dtype)
    b = _bias(24, dtype, m == 5)
    y = gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], group, b, (16, 32, split, 4, stages, dot))
    ref = quant_ops.w4a16(x, {**ops, **({"bias": b} if b is not None else {})}, group)
    assert rel_err(y, ref) < (TOL[dtype] if dtype == torch.float32 else 8e-3)


def test_w4a16_gemv_dequantizes_as_the_reference_rounds():
    """Dequantized weights that bf16 cannot hold exactly: the kernel rounds each as the reference does."""
    k, group = 64, 32
    qs = torch.randint(0, 16, (8, k), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ops = {"qweight": nq.pack_int4(qs).to(DEV), "scales": torch.full((8, k // group), 1 / 3 + 2 ** -20).to(DEV),
           "zeros": torch.full((8, k // group), 7, dtype=torch.uint8).to(DEV)}
    x = torch.zeros(1, k, dtype=torch.bfloat16, device=DEV)
    for j in range(k):  # one-hot x picks one weight: the output is that weight, as rounded
        x.zero_()
        x[0, j] = 1
        y = gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], group, None, (16, 32, 1, 4, 1, False))
        assert torch.equal(y, quant_ops.w4a16(x, ops, group)), j


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("stages", [1, 3])  # 3: the next weight tile prefetched into registers
def test_float_gemv_multiply_add_path(dtype, split, stages):
    x = _x(1, 296, dtype)
    w = _w(40, 296).to(dtype).to(DEV)
    b = _bias(40, dtype, True)
    y = gm.gemv(x, w, b, (16, 32, split, 4, stages, False))
    assert rel_err(y, gm.gemv_ref(x, w, b)) < (TOL[dtype] if dtype == torch.float32 else 8e-3)


def _same_as_unfused(fused, unfused, dtype):
    """On the GPU bit for bit (the same tiles, both rounding to nearest even). The interpreter's numpy dots sum in an
    order that depends on the tile's shape, and it truncates the unfused kernel's bf16 store."""
    if DEV == "cuda":
        assert torch.equal(fused, unfused), (fused.double() - unfused.double()).abs().max().item()
    elif dtype == torch.float32:
        assert rel_err(fused, unfused) < 1e-6
    else:
        assert rel_err(fused, unfused) < 2e-2  # a truncated gate and up: up to two bf16 ulps


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,split,dot,stages", [(1, 1, False, 1), (1, 2, False, 1), (1, 1, False, 2), (1, 1, True, 1),
                                                (3, 2, True, 1)])
def test_swiglu_gemv_is_the_activation_of_the_product(dtype, m, split, dot, stages):
    from workbench.plugins.activation import silu_and_mul

    x = _x(m, 296, dtype)
    w = (_w(80, 296) * 20).to(dtype).to(DEV)
    b = _bias(80, dtype, split == 2)
    cfg = (16, 32, split, 4, stages, dot)
    fused = gm.gemv(x, w, b, cfg, swiglu=True)
    assert fused.shape == (m, 40)
    _same_as_unfused(fused, silu_and_mul(gm.gemv(x, w, b, cfg)), dtype)
    assert rel_err(fused, gm.gemv_ref(x, w, b, swiglu=True)) < (TOL[dtype] if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("m,split,dot,stages", [(1, 1, False, 1), (1, 3, False, 1), (1, 1, False, 2), (4, 2, True, 1)])
def test_swiglu_quantized_gemv(fmt, m, split, dot, stages):
    from workbench.plugins.activation import silu_and_mul

    dtype = torch.bfloat16
    x = _x(m, 256, dtype)
    cfg = (16, 32, split, 4, stages, dot)
    if fmt == "int8":
        ops = _int8(48, 256)
        run = lambda sw: gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, cfg, swiglu=sw)  # noqa: E731
        ref = gm.w8a16_gemv_ref(x, ops["qweight"], ops["scales"], swiglu=True)
    else:
        ops = _int4(48, 256, 32)
        run = lambda sw: gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], 32, None, cfg, swiglu=sw)  # noqa: E731
        ref = gm.w4a16_gemv_ref(x, ops["qweight"], ops["scales"], ops["zeros"], 32, swiglu=True)
    _same_as_unfused(run(True), silu_and_mul(run(False)), dtype)
    assert rel_err(run(True), ref) < 2e-2


def test_swiglu_needs_gate_and_up_rows():
    with pytest.raises(ValueError, match="odd"):
        gm.gemv(_x(1, 64, torch.float32), _w(7, 64).to(DEV), swiglu=True)


@pytest.mark.parametrize("m", [1, 3])
def test_quantized_gemv_rows_not_whole_words(m):
    """K = 70 is not a whole number of int32 words of int8: the weights are read as bytes instead."""
    ops = _int8(24, 70)
    x = _x(m, 70, torch.float32)
    y = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, (16, 32, 1, 4, 1, False))
    assert rel_err(y, quant_ops.w8a16(x, ops)) < TOL[torch.float32]


def test_gemv_rejects_mismatched_shapes():
    ops = _int8(8, 64)
    with pytest.raises(ValueError, match="do not fit"):
        gm.w8a16_gemv(_x(1, 32, torch.float32), ops["qweight"], ops["scales"])
    with pytest.raises(ValueError, match="do not fit"):
        gm.gemv(_x(17, 64, torch.float32), _w(8, 64).to(DEV))


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="the byte-permute unpacking is inline PTX: GPU only")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("split,swiglu,bn", [(1, False, 8), (3, False, 32), (1, True, 16), (2, True, 32)])
def test_int8_byte_permute_unpacking_agrees_with_the_integer_one(monkeypatch, dtype, split, swiglu, bn):
    # q + 1152 times x is exact in fp32 and 1152 * sum(x) comes off at the end: the sums agree to about fp32
    # precision, so the rounded outputs are equal but for rare one-ulp ties
    n, k = 512, 4096
    x = _x(1, k, dtype)
    x[:, 17] = 300.0  # a large sum(x): the offset taken off is far larger than the result
    ops = _int8(n, k)
    cfg = (bn, 512, split, 4, 4, False)
    fast = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, cfg, swiglu)
    monkeypatch.setattr(gm, "PRMT", False)
    exact = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, cfg, swiglu)
    assert fast.shape == exact.shape
    assert (fast != exact).float().mean() < 0.01
    ulp = exact.float().abs() * (2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10) + 1e-6
    assert ((fast.float() - exact.float()).abs() <= ulp).all()


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="the byte-permute unpacking is inline PTX: GPU only")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("split,swiglu,bn", [(1, False, 16), (2, False, 8), (1, True, 8), (3, True, 16)])
def test_int8_tma_byte_permutes_give_the_integer_unpacking_bits(monkeypatch, dtype, split, swiglu, bn):
    # TMA tiles taking x by TMA unpack the words by byte permutes ("tma_prmt") into the same exact values as the
    # integer operations ("tma"), multiplied and summed in the same order: the same bits
    n, k = 512, 4096
    x = _x(1, k, dtype)
    ops = _int8(n, k)
    ops["qweight"][:, :8] = torch.tensor([-128, 127, -1, 0, 1, -127, 64, -64], dtype=torch.int8, device=DEV)
    seen = _launches(monkeypatch, "_gemv_tma", "X_TMA", "PRMT")
    fast = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, (bn, 512, split, 4, 4, "tma_prmt"), swiglu)
    exact = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, (bn, 512, split, 4, 4, "tma"), swiglu)
    assert seen == [(True, True), (True, False)]
    assert torch.equal(fast, exact)
    assert rel_err(exact, gm.w8a16_gemv_ref(x, ops["qweight"], ops["scales"], swiglu=swiglu)) < 2e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["float", "int8"])
@pytest.mark.parametrize("split,swiglu,bias", [(1, False, True), (2, False, False), (1, True, False), (3, True, True)])
def test_tma_tiles_match_the_register_tiles(dtype, fmt, split, swiglu, bias):
    # the products from tiles that TMA copies bring into shared memory (zeros past the weights' edge: 40 or 80 rows
    # are not whole tiles, nor 296 columns)
    n, k = (80 if swiglu else 40), 296
    x = _x(1, k, dtype)
    b = _bias(n, dtype, bias)
    if fmt == "float":
        w = (_w(n, k) * (20 if swiglu else 1)).to(dtype).to(DEV)
        tma = gm.gemv(x, w, b, (16, 32, split, 4, 3, "tma"), swiglu)
        regs = gm.gemv(x, w, b, (16, 32, split, 4, 1, False), swiglu)
        ref = gm.gemv_ref(x, w, b, swiglu=swiglu)
    else:
        ops = _int8(n, k)
        tma = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], b, (16, 32, split, 4, 3, "tma"), swiglu)
        regs = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], b, (16, 32, split, 4, 1, False), swiglu)
        ref = gm.w8a16_gemv_ref(x, ops["qweight"], ops["scales"], b, swiglu=swiglu)
    assert tma.shape == regs.shape == (1, n // 2 if swiglu else n)
    # the same products; the fp32 sums may be added in another order (the tiles' register layouts differ)
    assert rel_err(tma, regs) < (1e-5 if dtype == torch.float32 else 8e-3)
    assert rel_err(tma, ref) < (TOL[dtype] if dtype == torch.float32 else 2e-2)


def test_tma_config_falls_back_where_tma_cannot_read_the_weights():
    # rows of 298 bf16 values are not 16-byte aligned: the config runs as register tiles, with the same result
    x = _x(1, 298, torch.bfloat16)
    w = _w(24, 298).to(torch.bfloat16).to(DEV)
    assert not gm._tma_fits(w, gm.FLOAT, 298, 16, 32, 0)
    y = gm.gemv(x, w, None, (16, 32, 1, 4, 3, "tma"))
    assert rel_err(y, gm.gemv_ref(x, w)) < 8e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["float", "int8", "int4"])
@pytest.mark.parametrize("kind,split,swiglu", [(False, 1, False), (False, 2, True), (True, 1, False), ("tma", 1, True),
                                               ("tma", 3, False)])
def test_norm_in_the_gemv_is_the_norm_kernel_then_the_gemv(dtype, fmt, kind, split, swiglu):
    # the prologue's norm has the add + norm kernel's arithmetic (its sum of squares in fp64, so the tiling does not
    # matter): the same bits for the sum and the product
    from workbench.plugins.rms_norm import add_rms_norm

    n, k = (80 if swiglu else 40), 256
    a, b = _x(1, k, dtype, seed=4), _x(1, k, dtype, seed=5)
    g = (1 + 0.1 * torch.randn(k, generator=torch.Generator().manual_seed(6))).to(dtype).to(DEV)
    cfg = (16, 64, split, 4, 3, kind)
    assert gm.takes_norm(cfg, gm.INT4 if fmt == "int4" else gm.INT8) == (fmt != "int4" or kind != "tma")
    if not gm.takes_norm(cfg, gm.INT4 if fmt == "int4" else gm.INT8):
        cfg = cfg[:5] + (False,)  # int4 TMA tiles take no norm: with one it is the register tiles' (compared here)
    if fmt == "float":
        w = (_w(n, k) * (20 if swiglu else 1)).to(dtype).to(DEV)
        run = lambda x, norm=None: gm.gemv(x, w, None, cfg, swiglu, norm)  # noqa: E731
    elif fmt == "int8":
        ops = _int8(n, k)
        run = lambda x, norm=None: gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, cfg, swiglu, norm)  # noqa: E731
    else:
        ops = _int4(n, k, 64)
        run = lambda x, norm=None: gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], 64, None, cfg,  # noqa: E731
                                                 swiglu, norm)
    h, y = run(a, (b, g, 1e-5))
    h0, x0 = add_rms_norm(a, b, g, 1e-5)
    assert torch.equal(h, h0)
    assert torch.equal(y, run(x0))


def test_norm_in_the_gemv_takes_one_row():
    x = _x(2, 64, torch.float32)
    w = _w(8, 64).to(DEV)
    with pytest.raises(ValueError, match="the norm takes one row"):
        gm.gemv(x, w, norm=(x, torch.ones(64, device=DEV), 1e-5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("split,swiglu", [(1, False), (2, False), (1, True)])
def test_int8_tma_tiles_take_x_by_tma_too(monkeypatch, dtype, split, swiglu):
    # rows of whole 64-value chunks: x's chunks come by TMA and are split into the words' four columns in registers
    seen = _launches(monkeypatch, "_gemv_tma", "X_TMA")
    n, k = (96 if swiglu else 48), 512
    x = _x(1, k, dtype)
    ops = _int8(n, k)
    tma = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, (16, 128, split, 4, 3, "tma"), swiglu)
    regs = gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, (16, 128, split, 4, 1, False), swiglu)
    assert seen == [(True,)]
    assert rel_err(tma, regs) < (1e-5 if dtype == torch.float32 else 8e-3)
    assert rel_err(tma, gm.w8a16_gemv_ref(x, ops["qweight"], ops["scales"], swiglu=swiglu)) < \
        (TOL[dtype] if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,split,swiglu,bias,kind", [(1, 1, False, True, "tma"), (1, 2, False, False, "tma"),
                                                      (1, 1, True, False, "tma"), (1, 2, True, True, "tma"),
                                                      (3, 1, False, True, "tma"), (8, 2, True, False, "tma"),
                                                      (5, 1, True, True, "tma"), (3, 1, False, True, "tma_dot"),
                                                      (8, 2, True, False, "tma_dot"), (16, 1, True, True, "tma_dot")])
def test_int4_tma_tiles_match_the_register_tiles(monkeypatch, dtype, m, split, swiglu, bias, kind):
    # int4 words and x's chunks by TMA, x split into the words' eight columns in registers, each value rounded to
    # x's dtype as the reference rounds (one packed conversion a pair for bf16 on the GPU); several rows share the
    # dequantized values (the register tiles take the tensor cores there)
    seen = _launches(monkeypatch, "_gemv_tma_w4", "BLOCK_M", "WORDS", "DOT")
    n, k, group = (96 if swiglu else 48), 512, 128
    x = _x(m, k, dtype)
    ops = _int4(n, k, group)
    b = _bias(n, dtype, bias)
    cfg = (16, 128, split, 4, 3)
    tma = gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], group, b, cfg + (kind,), swiglu)
    regs = gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], group, b, cfg + (False,), swiglu)
    ref = gm.w4a16_gemv_ref(x, ops["qweight"], ops["scales"], ops["zeros"], group, b, swiglu=swiglu)
    dot = kind == "tma_dot" and m > 1
    assert seen == [(16 if dot else 1 << (m - 1).bit_length(), 16, dot)]  # rows padded (to 16 for the dot)
    assert tma.shape == regs.shape == (m, n // 2 if swiglu else n)
    assert rel_err(tma, regs) < (1e-5 if dtype == torch.float32 else 8e-3)
    assert rel_err(tma, ref) < (TOL[dtype] if dtype == torch.float32 else 2e-2)


def test_int4_tma_tiles_round_each_value_as_the_reference():
    # dequantized weights bf16 cannot hold exactly: one-hot x picks one weight, which must come out as rounded
    k, group = 128, 128
    qs = torch.randint(0, 16, (8, k), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ops = {"qweight": nq.pack_int4(qs).to(DEV), "scales": torch.full((8, 1), 1 / 3 + 2 ** -20).to(DEV),
           "zeros": torch.full((8, 1), 7, dtype=torch.uint8).to(DEV)}
    x = torch.zeros(1, k, dtype=torch.bfloat16, device=DEV)
    for j in range(0, k, 7):
        x.zero_()
        x[0, j] = 1
        y = gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], group, None, (8, 128, 1, 4, 2, "tma"))
        assert torch.equal(y, quant_ops.w4a16(x, ops, group)), j


def test_int4_tma_config_falls_back_where_tma_cannot_take_it():
    # tiles across groups, or a norm to compute: the register tiles run it
    ops = _int4(48, 256, 64)
    x = _x(1, 256, torch.bfloat16)
    y = gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], 64, None, (16, 128, 1, 4, 3, "tma"))
    ref = gm.w4a16_gemv_ref(x, ops["qweight"], ops["scales"], ops["zeros"], 64)
    assert rel_err(y, ref) < 2e-2

