"""bench/gemv_mma_w8.py: the one-row int8 GEMV on the tensor cores (an experiment the engines do not use). On the
CPU: it compiles for sm_90 (a subprocess with the interpreter off: byte permutes, tensor-core products, TMA copies)
and refuses what it cannot take. On a GPU: against the reference (runtime.quant_ops.w8a16) and the multiply-add
kernel, with K in pieces, swiglu and PDL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.compile_on_cpu import compiled_report

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
GPU = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


def test_compiles_for_hopper_on_the_cpu():
    code = """
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon import language as gl
import sys
sys.path.insert(0, 'bench')
from gemv_mma_w8 import _gemv_mma_w8 as fn
out = {}
for bn, split, swiglu in [(64, 1, False), (128, 4, True)]:
    sig = {n: 'constexpr' for n in fn.arg_names}
    layout = gl.NVMMASharedLayout.get_default_for([bn, 128], gl.int8)
    sig.update(desc=f'tensordesc<i8[{bn}, 128],{layout}>', X='*bf16', S='*fp32', Y='*bf16', N='i32', K='i32')
    consts = dict(BLOCK_N=bn, SUB=2, STAGES=3, SPLIT=split, SWIGLU=swiglu, FP16=False, KW=4, USE_GDC=True)
    k = triton.compile(GluonASTSource(fn, sig, {(fn.arg_names.index(n),): v for n, v in consts.items()}),
                       target=GPUTarget('cuda', 90, 32), options={'num_warps': 4})
    ptx = k.asm['ptx']
    out[f'{bn}/{split}/{swiglu}'] = [ptx.count('mma.sync'), ptx.count('prmt.b32'), ptx.count('cp.async.bulk.tensor'),
                                     ptx.count('griddepcontrol.wait')]
print(json.dumps(out))
"""
    got = compiled_report(code)
    for name, (mmas, prmts, copies, waits) in got.items():
        assert mmas and prmts and copies and waits == 1, f"{name}: mma {mmas}, prmt {prmts}, TMA {copies}, wait {waits}"


def test_refuses_what_it_cannot_take():
    from gemv_mma_w8 import fits, w8a16_gemv_mma

    x = torch.zeros(1, 4096, dtype=torch.bfloat16)
    q = torch.zeros(512, 4096, dtype=torch.int8)
    assert fits(x, q, 64, 256, 4, False)
    assert not fits(x, q, 64, 256, 3, False)  # pieces of K: 1, 2, 4 or 8
    assert not fits(x, q[:500], 64, 256, 1, False)  # rows not whole tiles
    assert not fits(x.float(), q, 64, 256, 1, False)
    with pytest.raises(ValueError, match="do not fit"):
        w8a16_gemv_mma(x, q[:, :4000], torch.ones(512))


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs a Hopper GPU")
@pytest.mark.parametrize("n,k,config,swiglu", [
    (6144, 4096, (64, 256, 2, 4, 4), False), (4096, 14336, (128, 256, 4, 8, 3), False),
    (2 * 14336, 4096, (64, 256, 1, 4, 4), True), (3072, 2048, (64, 256, 4, 4, 3), False),
    (2 * 8192, 2048, (128, 256, 2, 4, 3), True)])
@pytest.mark.parametrize("use_gdc", [False, True])
def test_matches_the_reference_and_the_multiply_adds(n, k, config, swiglu, use_gdc):
    from workbench.plugins.gemv import w8a16_gemv, w8a16_gemv_ref
    from gemv_mma_w8 import w8a16_gemv_mma

    torch.manual_seed(0)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    q = torch.randint(-128, 128, (n, k), device="cuda", dtype=torch.int8)
    s = torch.rand(n, device="cuda") / (60 * k ** 0.5)
    y = w8a16_gemv_mma(x, q, s, config, swiglu, use_gdc=use_gdc)
    ref = w8a16_gemv_ref(x, q, s, swiglu=swiglu)
    fma = w8a16_gemv(x, q, s, None, (16, 512, 1, 4, 4, "tma"), swiglu)
    assert y.shape == ref.shape and y.dtype == torch.bfloat16
    # fp32 sums in another order: within a bf16 rounding of the reference, mostly the same bits as the multiply-adds
    torch.testing.assert_close(y.float(), ref.float(), rtol=1e-2, atol=1e-3)
    assert (y == fma).float().mean() > 0.9
