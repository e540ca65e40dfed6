"""The one-row int8 GEMV on the tensor cores (bench/gemv_mma_w8.py) against the built-in table's config of the
multiply-add kernels, shape by shape (Llama-3-8B and Llama-3.2-1B), on an H100.

    python bench/gemv_mma_probe.py --models 8b            # every config that fits each shape, bf16 operands
    python bench/gemv_mma_probe.py --models 8b --fp16     # and the best ones with fp16 operands (x passed as fp16:
                                                          # the speed such a kernel would have, not a product the
                                                          # engine can use for bf16 activations)

Timing as bench/gemv_sweep.py: 20 calls captured in one CUDA graph, weight copies larger than L2 together; both
kernels under programmatic dependent launch where the device has it. Each config's output is compared with the
table kernel's: the largest difference in bf16 ulps of the output and the share of outputs with the same bits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from gemv_mma_w8 import w8a16_gemv_mma  # noqa: E402
from gemv_sweep import CALLS, GATE_UP, SHAPES, make_weights, time_graph  # noqa: E402
from gpu_models import device_name  # noqa: E402

SMEM = 200 * 1024


def configs(n: int, k: int, swiglu: bool) -> list[tuple]:
    """(BLOCK_N, BLOCK_K, SPLIT, warps, stages) that fit the shape, shared memory and 1-16 programs an SM."""
    out = []
    for bn, warps in ((64, 4), (128, 4), (128, 8)):
        for bk in (256, 512):
            for split in (1, 2, 4, 8):
                programs = n * split // bn
                if (n * split) % bn or k % (split * bk) or not 200 <= programs <= 2200 or k // split < bk:
                    continue
                for stages in (3, 4, 6):
                    if stages * bn * bk * (2 if swiglu else 1) <= SMEM:
                        out.append((bn, bk, split, warps, stages))
    return out


def ulps(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    """The largest difference in bf16 ulps (as ordered integers) and the share of equal values."""
    ia = a.view(torch.int16).int()
    ib = b.view(torch.int16).int()
    ia = torch.where(ia < 0, -32768 - ia, ia)
    ib = torch.where(ib < 0, -32768 - ib, ib)
    return int((ia - ib).abs().max()), float((ia == ib).float().mean())


@torch.inference_mode()
def main() -> None:
    from workbench.plugins.common import use_pdl
    from workbench.plugins.gemv import w8a16_gemv
    from workbench.runtime.gemv_policy import H100_GEMV

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="8b")
    ap.add_argument("--fp16", action="store_true", help="also time the best configs with fp16 operands")
    ap.add_argument("--name", default="gemv_mma_probe_h100")
    args = ap.parse_args()
    pdl = use_pdl()
    rows = []
    for model in args.models.split(","):
        for n, k in SHAPES[model]:
            for swiglu in ((True,) if (n, k) == GATE_UP[model] else (False,)):  # the engines fuse the activation
                copies = max(2, min(CALLS, -(-(160 << 20) // (n * k))))
                ws = make_weights("w8a16", n, k, copies)
                x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
                key = (1, n, k, "w8a16") + (("swiglu",) if swiglu else ())
                table = H100_GEMV[key]
                base_out = w8a16_gemv(x, ws[0]["q"], ws[0]["s"], None, table, swiglu)
                base = time_graph([lambda i=i: w8a16_gemv(x, ws[i % copies]["q"], ws[i % copies]["s"], None, table,
                                                          swiglu) for i in range(CALLS)])
                res = {"model": model, "n": n, "k": k, "swiglu": swiglu, "table_config": list(table),
                       "table_us": round(base, 2), "mma": {}, "errors": {}}
                for cfg in configs(n, k, swiglu):
                    try:
                        out = w8a16_gemv_mma(x, ws[0]["q"], ws[0]["s"], cfg, swiglu, use_gdc=pdl)
                        torch.cuda.synchronize()
                    except Exception as e:  # noqa: BLE001 - a config the device cannot run is a result
                        res["errors"][str(cfg)] = f"{type(e).__name__}: {e}"[:200]
                        continue
                    us = time_graph([lambda i=i: w8a16_gemv_mma(x, ws[i % copies]["q"], ws[i % copies]["s"], cfg,
                                                                swiglu, use_gdc=pdl) for i in range(CALLS)])
                    du, same = ulps(out, base_out)
                    res["mma"][str(cfg)] = {"us": round(us, 2), "max_ulps": du, "same": round(same, 4)}
                best = min(res["mma"].items(), key=lambda kv: kv[1]["us"]) if res["mma"] else None
                if args.fp16 and res["mma"]:
                    res["fp16"] = {}
                    xh = x.half()
                    for cfg_s, _ in sorted(res["mma"].items(), key=lambda kv: kv[1]["us"])[:3]:
                        cfg = eval(cfg_s)  # noqa: S307 - our own tuple's repr
                        us = time_graph([lambda i=i: w8a16_gemv_mma(xh, ws[i % copies]["q"], ws[i % copies]["s"], cfg,
                                                                    swiglu, use_gdc=pdl, fp16=True)
                                         for i in range(CALLS)])
                        res["fp16"][cfg_s] = round(us, 2)
                    print(f"  fp16 operands: {res['fp16']}", flush=True)
                size = n * k
                line = f"{model} N={n:6d} K={k:5d}{' swiglu' if swiglu else '       '}: table {base:7.2f} us " \
                       f"({size / base / 1e3:5.0f} GB/s) {tuple(table)}"
                if best:
                    line += f" | mma {best[1]['us']:7.2f} us ({size / best[1]['us'] / 1e3:5.0f} GB/s) {best[0]} " \
                            f"x{base / best[1]['us']:.3f}, {best[1]['max_ulps']} ulps, {best[1]['same']:.3f} same"
                print(line, flush=True)
                rows.append(res)
                ws = None
                torch.cuda.empty_cache()
                write_result(args.name, {"benchmark": "gemv_mma_probe", "device": device_name(), "machine": machine(),
                                         "pdl": pdl, "calls_per_graph": CALLS, "rows": rows})


if __name__ == "__main__":
    main()
