"""The reference quantized GEMMs against independent, straightforward computations.

Where the kernel's math is integer (W8A8) the comparison is bit for bit against an int64
matmul of the same int8 tensors; elsewhere within float32 tolerance.
"""

from __future__ import annotations

import pytest
import torch

from workbench.builder.network import Node
from workbench.builder.quantization import numerics as nq
from workbench.runtime import quant_ops


def _node(method: str, operands: list[str], **attrs) -> Node:
    return Node("layers.0.mlp.down", "quant_linear", ["x"] + operands, {"method": method, "operands": operands, **attrs},
                "float32", ["T", 0])


def _data(m=37, k=256, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    x[:, 5] *= 20.0  # an outlier channel
    w = torch.randn(n, k, generator=g) * 0.05
    return x, w, g


def test_round_half_to_even_and_saturation():
    scale = torch.tensor(1.0)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 127.6, 300.0, -300.0])
    assert nq.quantize_int8(x, scale).tolist() == [0, 2, 2, 0, -2, 127, 127, -128]
    f = nq.quantize_fp8(torch.tensor([1000.0, -1000.0, 0.0]), scale).to(torch.float32)
    assert f.tolist() == [448.0, -448.0, 0.0]


def test_int4_packing_layout():
    q = torch.tensor([[1, 2, 15, 0, 7, 8]], dtype=torch.uint8)
    packed = nq.pack_int4(q)
    assert packed.tolist() == [[1 | (2 << 4), 15 | (0 << 4), 7 | (8 << 4)]]  # low nibble = even index
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 16, (5, 64), generator=g, dtype=torch.uint8)
    assert torch.equal(nq.unpack_int4(nq.pack_int4(r)), r)


def test_int_matmul_is_exact_int32_accumulation():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (33, 1536), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (20, 1536), generator=g, dtype=torch.int8)
    a[0], b[0] = -128, -128  # the largest products: 1536 * 2^14 needs 25 bits
    expected = a.to(torch.int64) @ b.to(torch.int64).T
    got = nq.int_matmul(a, b)
    assert got.dtype == torch.int32
    assert torch.equal(got.to(torch.int64), expected)


@pytest.mark.parametrize("act", ["per_token", "per_tensor"])
@pytest.mark.parametrize("weights", ["per_channel", "per_tensor"])
def test_w8a8_matches_int64_reference_bit_for_bit(act, weights):
    x, w, g = _data()
    smooth = torch.rand(w.shape[1], generator=g) + 0.5
    bias = torch.randn(w.shape[0], generator=g)
    ws = w * smooth
    w_scale = nq.safe_scale(ws.abs().amax(1) if weights == "per_channel" else ws.abs().amax().reshape(1), 127)
    qw = torch.clamp(torch.round(ws / (w_scale[:, None] if weights == "per_channel" else w_scale)), -128, 127).to(torch.int8)
    ops = {"x": x, "qweight": qw, "scales": w_scale, "smooth": smooth, "bias": bias}
    xs = x / smooth
    if act == "per_tensor":
        ops["act_scale"] = torch.tensor([float((xs.abs().max() * 0.9) / 127)])  # some values saturate
        sx = ops["act_scale"]
    else:
        sx = xs.abs().amax(-1, keepdim=True) / 127
    roles = [r for r in ("qweight", "scales", "act_scale", "smooth", "bias") if r in ops]
    y = quant_ops.quant_linear(_node("w8a8", roles, act=act), [ops[r] for r in ["x"] + roles], None)

    # independent: quantize, accumulate in int64, scale
    xq = torch.clamp(torch.round(xs / sx), -128, 127).to(torch.int64)
    acc = xq @ qw.to(torch.int64).T
    assert acc.abs().max() < 2**31
    expected = (acc.to(torch.float32) * sx) * w_scale + bias
    assert torch.equal(y, expected)


def test_w8a16_matches_dequantized_matmul():
    x, w, _ = _data()
    q, s = nq.quantize_int8(w, nq.safe_scale(w.abs().amax(1), 127)[:, None]), nq.safe_scale(w.abs().amax(1), 127)
    y = quant_ops.quant_linear(_node("w8a16", ["qweight", "scales"]), [x, q, s], None)
    expected = x.double() @ (q.double() * s.double()[:, None]).T
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    assert ((y - x @ w.T).norm() / (x @ w.T).norm()) < 0.01  # and it is close to the float layer


@pytest.mark.parametrize("k", [256, 192])  # 192: a short last group of 64
def test_w4a16_matches_a_loop_over_groups(k):
    x, w, _ = _data(m=9, k=k, n=6)
    gs = 128
    scales, zeros = nq.int4_group_params(w, gs)
    q = nq.quantize_int4(w, scales, zeros, gs)
    ops = [x, nq.pack_int4(q), scales, zeros.to(torch.uint8)]
    y = quant_ops.quant_linear(_node("w4a16", ["qweight", "scales", "zeros"], group_size=gs), ops, None)
    expected = torch.zeros(9, 6, dtype=torch.float64)
    for n in range(6):
        for c in range(k):
            byte = int(ops[1][n, c // 2])
            v = (byte >> 4) if c % 2 else (byte & 0xF)
            wc = (v - int(zeros[n, c // gs])) * float(scales[n, c // gs])
            expected[:, n] += x[:, c].double() * wc
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


def test_w4a16_rounds_weights_to_the_activation_dtype():
    x, w, _ = _data(m=4, k=256, n=8)
    scales, zeros = nq.int4_group_params(w, 128)
    q = nq.quantize_int4(w, scales, zeros, 128)
    ops = [x.to(torch.bfloat16), nq.pack_int4(q), scales, zeros.to(torch.uint8)]
    y = quant_ops.quant_linear(_node("w4a16", ["qweight", "scales", "zeros"], group_size=128), ops, None)
    wd = nq.dequantize_int4(q, scales, zeros, 128).to(torch.bfloat16).float()
    expected = (x.to(torch.bfloat16).float() @ wd.T).to(torch.bfloat16)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected, rtol=1e-2, atol=1e-2)


def test_fp8_matches_scaled_float_matmul():
    x, w, _ = _data()
    sw = nq.safe_scale(w.abs().amax().reshape(1), 448)
    sx = nq.safe_scale(x.abs().amax().reshape(1), 448)
    qw = nq.quantize_fp8(w, sw)
    assert qw.dtype == torch.float8_e4m3fn
    y = quant_ops.quant_linear(_node("fp8", ["qweight", "scales", "act_scale"], act="per_tensor"), [x, qw, sw, sx], None)
    xq = (x / sx).clamp(-448, 448).to(torch.float8_e4m3fn)
    expected = (xq.double() @ qw.double().T) * (sx.double() * sw.double())
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_dtype", ["int8", "fp8"])
def test_kv_quantize_round_trip(kv_dtype):
    g = torch.Generator().manual_seed(0)
    k = torch.randn(10, 3, 16, generator=g) * torch.tensor([1.0, 5.0, 0.1])[None, :, None]
    qmax = 127 if kv_dtype == "int8" else 448
    scale = k.abs().amax(dim=(0, 2)) / qmax  # per head
    q = quant_ops.quantize_kv(k, scale, kv_dtype)
    assert q.dtype == quant_ops.KV_DTYPES[kv_dtype]
    back = quant_ops.dequantize_kv(q, scale, torch.float32)
    if kv_dtype == "int8":
        assert ((back - k).abs() <= scale[None, :, None] / 2 + 1e-7).all()
    else:  # e4m3: 3 mantissa bits, relative error at most 2^-4 above the subnormals
        assert ((back - k).abs() <= k.abs() / 16 + scale[None, :, None] * 2**-9).all()


@pytest.mark.parametrize("k,gs", [(576, 128), (256, 96)])
def test_fake_int4_is_quantize_then_dequantize(k, gs):
    w = torch.randn(40, k, generator=torch.Generator().manual_seed(1))
    s, z = nq.int4_group_params(w, gs)
    assert torch.equal(nq.fake_int4(w, gs), nq.dequantize_int4(nq.quantize_int4(w, s, z, gs), s, z, gs))
