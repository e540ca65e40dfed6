"""The decode step's layer blocks after attention (o_proj, add + norm, gate_up with its activation, down, add +
norm, the next layer's qkv) as one persistent kernel a layer (plugins/decode_block.py) against the same work as
the plugins' launches (GEMVs with the built-in table's configs and the add + norm kernels), every layer of a Llama
shape chained in one CUDA graph with programmatic dependent launch, attention left out (its output is the block
before's). A benchmark of the block, not of an engine (the engines run it through runtime/layer_block.py;
bench/decode_quant.py measures them).

    python bench/decode_block.py                       # Llama-3.2-1B and Llama-3-8B shapes, bf16 and int8
    python bench/decode_block.py --models 8b --formats int8

Reports each chain's time, the weights' read rate and the ratio, and how far the block's last output is from the
launches' (relative error: the sums' order differs). Writes bench/results/decode_block_h100.json (and $OUT/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from persistent_probe import graph_ms  # noqa: E402

SHAPES = {"1b": dict(layers=16, h=2048, qkv=3072, i=8192), "8b": dict(layers=32, h=4096, qkv=6144, i=14336)}


def layer_weights(shape: dict, fmt: str, seed: int) -> tuple[list, tuple | None]:
    """One layer's o, gate_up, down and next qkv weights (int8: words and per-channel scales)."""
    from workbench.builder.quantization import numerics as nq

    g = torch.Generator(device="cuda").manual_seed(seed)
    h, i, n = shape["h"], shape["i"], shape["qkv"]
    ws = [torch.randn(rows, k, generator=g, device="cuda") * k ** -0.5 for rows, k in ((h, h), (2 * i, h), (h, i),
                                                                                       (n, h))]
    if fmt == "bf16":
        return [w.to(torch.bfloat16) for w in ws], None
    scales = [nq.safe_scale(w.abs().amax(1), 127).float() for w in ws]
    return [nq.quantize_int8(w, s[:, None]).view(torch.int32) for w, s in zip(ws, scales)], tuple(scales)


def blocks(layers, norms, counters, x, res, pdl=True):
    from workbench.plugins.decode_block import decode_block

    for (ws, scales), (g2, gn), cnt in zip(layers, norms, counters):
        out = decode_block(x, res, g2, 1e-5, ws[0], ws[1], ws[2], gn, 1e-5, ws[3], cnt, scales, use_gdc=pdl)
        x, res = out["y"][:, :x.shape[1]], out["h2"]
    return x


def _linear(ws, scales, a, k, swiglu=False):
    """Projection k of a layer (o, gate_up, down, next) by the plugins' GEMV with the built-in table's config."""
    from workbench.plugins.gemv import gemv, w8a16_gemv
    from workbench.runtime.gemv_policy import H100_GEMV as table

    w = ws[k] if scales is None else ws[k].view(torch.int8)
    key = (1, w.shape[0], a.shape[1]) + (("w8a16",) if scales else ()) + (("swiglu",) if swiglu else ())
    if scales is None:
        return gemv(a, w, None, table.get(key), swiglu=swiglu)
    return w8a16_gemv(a, w, scales[k], None, table.get(key), swiglu=swiglu)


def launches(layers, norms, x, res):
    from workbench.plugins.rms_norm import add_rms_norm

    for (ws, scales), (g2, gn) in zip(layers, norms):
        o = _linear(ws, scales, x, 0)
        h1, n1 = add_rms_norm(o, res, g2, 1e-5)
        d = _linear(ws, scales, _linear(ws, scales, n1, 1, True), 2)
        res, n2 = add_rms_norm(d, h1, gn, 1e-5)
        x = _linear(ws, scales, n2, 3)[:, :x.shape[1]]
    return x


def plain_launches(layers, x):
    """bench/ws_chain_probe.py's chain on these weights (no norms: qkv, o, gate_up, down a layer, each output the
    next input), to compare the two benchmarks' baselines."""
    h = x.shape[1]
    for ws, scales in layers:
        qkv = _linear(ws, scales, x, 3)
        x = _linear(ws, scales, _linear(ws, scales, _linear(ws, scales, qkv[:, :h], 0), 1, True), 2)
    return x


def run(name: str, fmt: str, out: dict) -> None:
    shape = SHAPES[name]
    layers = [layer_weights(shape, fmt, seed) for seed in range(shape["layers"])]
    h = shape["h"]
    g = torch.Generator(device="cuda").manual_seed(99)
    norms = [tuple((1 + 0.1 * torch.randn(h, generator=g, device="cuda")).to(torch.bfloat16) for _ in range(2))
             for _ in layers]
    counters = [torch.zeros(5, dtype=torch.int32, device="cuda") for _ in layers]
    x = torch.randn(1, h, generator=g, device="cuda").to(torch.bfloat16)
    res = (4 * torch.randn(1, h, generator=g, device="cuda")).to(torch.bfloat16)
    nbytes = sum(sum(w.numel() * w.element_size() for w in ws) for ws, _ in layers)
    ref = launches(layers[:1], norms[:1], x, res)  # one layer: values the chain has not yet blown up
    err = ((blocks(layers[:1], norms[:1], counters[:1], x, res, False).float() - ref.float()).norm()
           / ref.float().norm()).item()
    t_launch = graph_ms(lambda: launches(layers, norms, x, res))
    t_block = graph_ms(lambda: blocks(layers, norms, counters, x, res))
    t_plain = graph_ms(lambda: plain_launches(layers, x))
    row = {"weight_bytes": nbytes, "one_layer_rel_err": err,
           "launches": {"ms": round(t_launch, 4), "TBps": round(nbytes / t_launch / 1e9, 3)},
           "blocks": {"ms": round(t_block, 4), "TBps": round(nbytes / t_block / 1e9, 3)},
           "launches_over_blocks": round(t_launch / t_block, 3),
           "plain_launches": {"ms": round(t_plain, 4), "TBps": round(nbytes / t_plain / 1e9, 3)}}
    out.setdefault(name, {})[fmt] = row
    print(f"[{name} {fmt}] launches {t_launch:.4f} ms ({row['launches']['TBps']} TB/s), blocks {t_block:.4f} ms "
          f"({row['blocks']['TBps']} TB/s): x{t_launch / t_block:.3f}; one layer's relative error {err:.1e}; the "
          f"probe's chain (no norms) by launches {t_plain:.4f} ms", flush=True)
    layers.clear()
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--formats", default="bf16,int8")
    ap.add_argument("--name", default="decode_block_h100")
    args = ap.parse_args()
    result = {"benchmark": "decode_block", "machine": machine(), "models": {}}
    for name in args.models.split(","):
        for fmt in args.formats.split(","):
            run(name, fmt, result["models"])
    print(f"-> {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
