"""plugins/decode_block.py: the layer block after attention as one persistent warp-specialised kernel. On the CPU:
it compiles for sm_90 (a subprocess with the interpreter off) and refuses shapes it cannot take. On a GPU: against
its torch reference and the unfused plugins (GEMV, add + norm), launched again and again (its counters count
launches), and chained under programmatic dependent launch in a CUDA graph."""

from __future__ import annotations

import pytest
import torch

from tests.compile_on_cpu import compiled_report

GPU = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
SHAPES = [(1024, 2048, 1536), (2048, 8192, 3072)]  # H, I, rows of the next projection


def test_block_compiles_for_hopper_on_the_cpu():
    code = """
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from workbench.plugins import decode_block as db
fn, out = db._decode_block, {}
for wq, (h, i), paired in [(0, (4096, 14336), True), (8, (4096, 14336), False), (0, (2048, 8192), False)]:
    desc = f"tensordesc<{'i32' if wq else 'bf16'}[{db.ROWS[wq]}, {db.TILE_W[wq]}],{db._shared_layout(wq)}>"
    sig = {n: 'constexpr' for n in fn.arg_names}
    sig.update({n: desc for n in ('d_o', 'd_gu', 'd_dn', 'd_nx')})
    sig.update({n: '*bf16' for n in ('X', 'RES', 'G2', 'GN', 'O', 'H1', 'ACT', 'D', 'H2', 'Y')})
    sig.update({n: '*fp32' for n in ('S_o', 'S_gu', 'S_dn', 'S_nx')}, CNT='*i32', N_NX='i32', eps2='fp32', eps_n='fp32',
               TR='*i64')
    ring = db.RING_KIB * 1024 // (db.ROWS[wq] * db.TILE_W[wq] * (4 if wq else 2))
    consts = dict(H=h, I=i, RING=ring, XR=db.x_rows(wq, h, i), WQ=wq, USE_GDC=True, PAIRED=paired)
    k = triton.compile(GluonASTSource(fn, sig, {(fn.arg_names.index(n),): v for n, v in consts.items()}),
                       target=GPUTarget('cuda', 90, 32), options={'num_warps': db.WARPS, 'maxnreg': db.MAXNREG})
    ptx = k.asm['ptx']
    regs, threads = (int(re.search(rf'\\.{d} (\\d+)', ptx).group(1)) for d in ('maxnreg', 'reqntid'))
    out[f'{wq}/{h}'] = [k.metadata.shared, ptx.count('cp.async.bulk.tensor'), ptx.count('ld.global.gpu.acquire'),
                        ptx.count('griddepcontrol.wait'), ptx.count('f64'), regs * threads]
print(json.dumps(out))
"""
    got = compiled_report(code)
    for name, (shared, copies, acquires, waits, f64, registers) in got.items():
        assert 128 << 10 < shared <= (227 - 51) << 10, f"{name}: {shared} bytes (attention's programs must fit beside)"
        assert copies and acquires and waits and f64, f"{name}: a TMA copy, a counter wait, the PDL wait, the fp64 sum"
        # a program of the decode attention (at most 136 registers for 128 threads) must fit beside one of the block
        assert registers + 136 * 128 <= 1 << 16, f"{name}: {registers} registers at launch"


def test_block_refuses_what_it_cannot_take():
    from workbench.plugins.decode_block import check

    x = torch.zeros(1, 1024, dtype=torch.bfloat16)
    w = lambda n, k: torch.zeros(n, k, dtype=torch.bfloat16)  # noqa: E731
    assert check(x, w(1024, 1024), w(4096, 1024), w(1024, 2048), w(1536, 1024), 0) == (1024, 2048, 1536)
    with pytest.raises(ValueError, match="one bf16 row"):
        check(torch.zeros(2, 1024, dtype=torch.bfloat16), w(1024, 1024), w(4096, 1024), w(1024, 2048), w(8, 1024), 0)
    with pytest.raises(ValueError, match="w_dn"):
        check(x, w(1024, 1024), w(4096, 1024), w(1024, 1024), w(1536, 1024), 0)
    with pytest.raises(ValueError, match="multiples"):
        check(x, w(1024, 1024), w(4096, 1024), w(1024, 2048), w(1540, 1024), 0)
    from workbench.plugins.decode_block import decode_block

    with pytest.raises(ValueError, match="counters must be 5 int32"):
        decode_block(x, x, x[0], 1e-5, w(1024, 1024), w(4096, 1024), w(1024, 2048), x[0], 1e-5, w(1536, 1024),
                     torch.zeros(4, dtype=torch.int32))


def _inputs(h, i, n, fmt, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def w(rows, k):
        return torch.randn(rows, k, generator=g, device="cuda") * k ** -0.5

    ws = [w(h, h), w(2 * i, h), w(h, i), w(n, h)]  # o, gate_up, down, the next projection
    scales = None
    if fmt == "int8":
        from workbench.builder.quantization import numerics as nq

        qs, scales = [], []
        for t in ws:
            s = nq.safe_scale(t.abs().amax(1), 127)
            qs.append(nq.quantize_int8(t, s[:, None]).view(torch.int32))
            scales.append(s.float())
        ws, scales = qs, tuple(scales)
    else:
        ws = [t.to(torch.bfloat16) for t in ws]
    x = torch.randn(1, h, generator=g, device="cuda").to(torch.bfloat16)
    res = (4 * torch.randn(1, h, generator=g, device="cuda")).to(torch.bfloat16)
    g2 = (1 + 0.1 * torch.randn(h, generator=g, device="cuda")).to(torch.bfloat16)
    gn = (1 + 0.1 * torch.randn(h, generator=g, device="cuda")).to(torch.bfloat16)
    return (x, res, g2, 1e-5, ws[0], ws[1], ws[2], gn, 1e-5, ws[3]), scales


def _unfused(args, scales):
    """The block by the engine's plugins, launch by launch."""
    from workbench.plugins.gemv import gemv, w8a16_gemv
    from workbench.plugins.rms_norm import add_rms_norm

    x, res, g2, eps2, w_o, w_gu, w_dn, gn, eps_n, w_nx = args

    def lin(a, w, k, swiglu=False):
        if scales is None:
            return gemv(a, w, None, None, swiglu=swiglu)
        return w8a16_gemv(a, w.view(torch.int8), scales[k], None, None, swiglu=swiglu)

    o = lin(x, w_o, 0)
    h1, n1 = add_rms_norm(o, res, g2, eps2)
    act = lin(n1, w_gu, 1, True)
    d = lin(act, w_dn, 2)
    h2, n2 = add_rms_norm(d, h1, gn, eps_n)
    return {"o": o, "h1": h1, "act": act, "d": d, "h2": h2, "y": lin(n2, w_nx, 3)}


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="a Hopper GPU")
@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ring_kib", [None, 64])  # the default ring and the engines' table's smaller one
@pytest.mark.parametrize("paired", [False, True])
def test_block_matches_its_reference_and_the_unfused_plugins(fmt, shape, ring_kib, paired):
    from workbench.plugins.decode_block import decode_block, decode_block_ref

    args, scales = _inputs(*shape, fmt)
    counters = torch.zeros(5, dtype=torch.int32, device="cuda")
    runs = [decode_block(*args, counters, scales, ring_kib=ring_kib, paired=paired)
            for _ in range(3)]  # the counters count launches
    torch.cuda.synchronize()
    assert int(counters[4]) == 3
    ref, plugins = decode_block_ref(*args, scales), _unfused(args, scales)
    for name, got in runs[0].items():
        assert all(torch.equal(got, r[name]) for r in runs[1:]), f"{name}: another launch gave other bits"
        assert _rel(got, ref[name]) < 2e-2, f"{name}: {_rel(got, ref[name]):.2e} from the reference"
        assert _rel(got, plugins[name]) < 1e-2, f"{name}: {_rel(got, plugins[name]):.2e} from the plugins"
    # the add + norm take their inputs' bits: where o agrees with the plugins' o, so does h1
    same = runs[0]["o"] == plugins["o"]
    assert torch.equal(runs[0]["h1"][same], (plugins["o"] + args[1])[same])


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="a Hopper GPU")
def test_blocks_chained_under_pdl_in_a_graph_give_the_eager_bits():
    from workbench.plugins.common import use_pdl
    from workbench.plugins.decode_block import decode_block

    if not use_pdl():
        pytest.skip("no programmatic dependent launch")
    layers = [_inputs(1024, 2048, 1024, "bf16", seed=s)[0] for s in range(3)]
    counters = [torch.zeros(5, dtype=torch.int32, device="cuda") for _ in layers]
    x0 = layers[0][0].clone()

    def chain(pdl):
        x, res = x0, layers[0][1]
        for args, cnt in zip(layers, counters):
            out = decode_block(x, res, *args[2:], cnt, None, use_gdc=pdl)
            x, res = out["y"], out["h2"]  # the next block's input stands in for attention's output
        return x

    eager = chain(False).clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        chain(True)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = chain(True)
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, eager)
