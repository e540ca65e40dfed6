"""Under programmatic dependent launch (PDL) a GEMV starts while the kernel before it still runs: it may read its
weights early, x only after its wait. Checked three ways: in the op order Triton's pipeliner schedules (the sm_90
TTGIR of every GEMV variant, the decode attention and the step's kernels that wait first thing, compiled on the
CPU by ttgir_order.py in a subprocess with the interpreter off); by results on a GPU, against a kernel that writes
x 2 ms after letting the GEMV launch; and the choice of PDL mode by weight format. Before the sixth session the TMA
tiles read x first; on an H100 that changed the tokens of int8 and int4 engines under PDL
(tests/gpu/test_pdl_full_shapes.py)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.plugins.test_gemv import DEV, _int4, _int8, _launches, _w, _x, gm


def test_decode_kernels_read_their_inputs_only_after_their_wait():
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ttgir_order.py"))], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    order = json.loads(proc.stdout)
    assert len(order) == 19
    for name, seen in order.items():
        assert seen["wait"] >= 0 and seen["reads"], f"{name}: no wait or no read of its inputs found in its TTGIR"
        assert min(seen["reads"]) > seen["wait"], f"{name}: an input read at TTGIR line {min(seen['reads'])}, " \
                                                  f"before the wait at line {seen['wait']}"


@functools.cache
def _late_writer():
    """A kernel that lets the next one launch at once (PDL), then writes x only after `ns` nanoseconds (made once, so
    the test's cases share its compilation)."""
    import triton
    import triton.language as tl

    from workbench.plugins.common import gdc_begin

    @triton.jit
    def late_writer(X, V, n, ns, BLOCK: tl.constexpr, USE_GDC: tl.constexpr):
        gdc_begin(USE_GDC)
        t0 = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
        t = t0
        while t - t0 < ns:
            t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False,
                                          pack=1)
        offs = tl.arange(0, BLOCK)
        tl.store(X + offs, tl.load(V + offs, mask=offs < n), mask=offs < n)

    return late_writer


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="programmatic dependent launch: GPU only")
@pytest.mark.parametrize("fmt,kind,norm", [("float", "tma", False), ("float", "tma", True), ("float", False, False),
                                           ("int8", "tma", False), ("int8", "tma_prmt", False), ("int8", False, False),
                                           ("int4", "tma", False)])
def test_gemv_reads_x_only_after_the_kernel_before_wrote_it(monkeypatch, fmt, kind, norm):
    # under PDL a GEMV launches while the kernel before still runs, and may read its weights early; x (the norm's
    # residual too) only after its wait: here the kernel before writes x 2 ms after letting the GEMV launch (longer
    # than the GEMV's launch from Python takes)
    from workbench.plugins.common import use_pdl

    if not use_pdl():
        pytest.skip("no programmatic dependent launch on this GPU")
    monkeypatch.setattr(gm, "PDL_MODE", "prefetch")
    n, k = 1024, 4096
    v = _x(1, k, torch.bfloat16)
    x = torch.zeros_like(v)
    cfg = (16, {"float": 256, "int8": 512, "int4": 128}[fmt], 1, 4, 4, kind)  # TMA boxes: at most 256 a side
    seen = _launches(monkeypatch, "_gemv_tma" if fmt != "int4" else "_gemv_tma_w4", "GDC_MODE") if kind else []
    if fmt == "float":
        w = _w(n, k).to(torch.bfloat16).to(DEV)
        run = lambda x, norm_args: gm.gemv(x, w, None, cfg, norm=norm_args)  # noqa: E731
    elif fmt == "int8":
        ops = _int8(n, k)
        run = lambda x, norm_args: gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, cfg, norm=norm_args)  # noqa
    else:
        ops = _int4(n, k, 128)
        run = lambda x, norm_args: gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], 128, None, cfg,  # noqa
                                                 norm=norm_args)
    res = _x(1, k, torch.bfloat16, seed=5)
    nw = torch.rand(k, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16).to(DEV)
    expected = run(v, (res, nw, 1e-5) if norm else None)
    writer = _late_writer()
    for _ in range(3):
        x.zero_()
        torch.cuda.synchronize()
        writer[(1,)](x, v, k, 2_000_000, BLOCK=k, USE_GDC=True, launch_pdl=True)
        got = run(x, (res, nw, 1e-5) if norm else None)
        torch.cuda.synchronize()
        assert torch.equal(got[1] if norm else got, expected[1] if norm else expected)
    assert all(mode == (gm.PDL_MODES["prefetch"],) for mode in seen) and len(seen) == (4 if kind else 0)


@pytest.mark.parametrize("fmt", ["float", "int8", "int4"])
def test_pdl_modes_choose_by_format_and_give_the_same_bits(monkeypatch, fmt):
    # auto: float weights wait first thing (late), quantized ones read their first weight tiles before waiting
    # (prefetch); either way the TMA tiles compute the same sums (in the interpreter the wait is a no-op, and x's
    # offsets add its zero)
    n, k = 40, 256
    x = _x(1, k, torch.bfloat16)
    if fmt == "float":
        w = _w(n, k).to(torch.bfloat16).to(DEV)
        run = lambda: gm.gemv(x, w, None, (16, 64, 1, 4, 3, "tma"))  # noqa: E731
    elif fmt == "int8":
        ops = _int8(n, k)
        run = lambda: gm.w8a16_gemv(x, ops["qweight"], ops["scales"], None, (16, 64, 1, 4, 3, "tma"))  # noqa: E731
    else:
        ops = _int4(n, k, 128)
        run = lambda: gm.w4a16_gemv(x, ops["qweight"], ops["scales"], ops["zeros"], 128, None,  # noqa: E731
                                    (16, 128, 1, 4, 3, "tma"))
    seen = _launches(monkeypatch, "_gemv_tma_w4" if fmt == "int4" else "_gemv_tma", "GDC_MODE")
    out = {}
    for mode in ("auto", "late", "prefetch"):
        monkeypatch.setattr(gm, "PDL_MODE", mode)
        out[mode] = run()
    assert [s[0] for s in seen] == [2 if fmt == "float" else 3, 2, 3]
    assert torch.equal(out["late"], out["prefetch"]) and torch.equal(out["auto"], out["late"])
    monkeypatch.setattr(gm, "PDL_MODE", "eager")
    with pytest.raises(ValueError, match="WB_GEMV_PDL='eager'"):
        run()
