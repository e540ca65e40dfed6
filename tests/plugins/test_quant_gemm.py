"""The quantized GEMMs of workbench/plugins/quant_gemm.py against the torch references of
workbench/runtime/quant_ops.py (CPU: Triton's interpreter and torch's CPU _int_mm/_scaled_mm)."""

from __future__ import annotations

import pytest
import torch

from tests.plugins.conftest import TOL, rel_err
from workbench.builder.network import Node
from workbench.builder.quantization import numerics as nq
from workbench.runtime import quant_ops

qg = pytest.importorskip("workbench.plugins.quant_gemm")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _node(method, operands, **attrs):
    return Node("layers.0.mlp.down", "quant_linear", ["x"] + operands, {"method": method, "operands": operands, **attrs},
                "float32", ["T", 0])


def _weights(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 0.05, torch.rand(k, generator=g) + 0.5, torch.randn(n, generator=g)


def _x(m, k, dtype, seed=1):
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed))
    x[:, 3] *= 10
    return x.to(dtype)


def _both(node, xs):
    xs = [t.to(DEV) for t in xs]
    return qg.quant_linear(node, xs, None).cpu(), quant_ops.quant_linear(node, xs, None).cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [256, 192])  # 192 = one group of 128 and a short one of 64
def test_w4a16(dtype, k):
    w, smooth, bias = _weights(40, k)
    s, z = nq.int4_group_params(w, 128)
    ops = {"qweight": nq.pack_int4(nq.quantize_int4(w, s, z, 128)), "scales": s, "zeros": z.to(torch.uint8),
           "smooth": smooth, "bias": bias.to(dtype)}
    node = _node("w4a16", list(ops), group_size=128)
    got, ref = _both(node, [_x(5, k, dtype)] + list(ops.values()))
    assert got.dtype == dtype
    assert rel_err(got, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_w8a16(dtype):
    w, _, bias = _weights(48, 256)
    s = nq.safe_scale(w.abs().amax(1), 127)
    ops = {"qweight": nq.quantize_int8(w, s[:, None]), "scales": s, "bias": bias.to(dtype)}
    got, ref = _both(_node("w8a16", list(ops)), [_x(7, 256, dtype)] + list(ops.values()))
    assert rel_err(got, ref) < TOL[dtype]


@pytest.mark.parametrize("act", ["per_token", "per_tensor"])
@pytest.mark.parametrize("n", [48, 20])  # 20: not a multiple of 8, the exact fallback
def test_w8a8_is_bit_exact(act, n):
    w, smooth, bias = _weights(n, 256)
    ws = w * smooth
    s = nq.safe_scale(ws.abs().amax(1), 127)
    ops = {"qweight": nq.quantize_int8(ws, s[:, None]), "scales": s, "smooth": smooth, "bias": bias}
    if act == "per_tensor":
        ops["act_scale"] = torch.tensor([0.05])
    got, ref = _both(_node("w8a8", list(ops), act=act), [_x(5, 256, torch.float32)] + list(ops.values()))
    assert torch.equal(got, ref)


def test_fp8():
    w, _, bias = _weights(48, 256)
    sw = nq.safe_scale(w.abs().amax().reshape(1), 448)
    ops = {"qweight": nq.quantize_fp8(w, sw), "scales": sw, "act_scale": torch.tensor([0.02]), "bias": bias}
    got, ref = _both(_node("fp8", list(ops), act="per_tensor"), [_x(5, 256, torch.float32)] + list(ops.values()))
    # the same e4m3 products; Hopper's FP8 tensor cores accumulate with fewer bits than fp32 (8.7e-5 measured on an
    # H100), the CPU's _scaled_mm in fp32
    assert rel_err(got, ref) < (2e-4 if DEV == "cuda" else 1e-5)
