"""Quantized GEMMs at decode shapes on the GPU: bf16 cuBLAS vs the W8A16 / W4A16 Triton kernels, batch 1 and 8.

Usage: python bench/quant_gemm_gpu.py [--out DIR]. Llama-3-8B decoder shapes (qkv, o_proj,
gate_up, down). This times the GEMMs alone, not a whole decode step (bench/decode_quant.py
times those).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as TF

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import machine  # noqa: E402
from gpu_models import cuda_time_ms  # noqa: E402

SHAPES = {"qkv": (4096, 6144), "o_proj": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}


def timed_ms(fn) -> float:
    """Median milliseconds of fn over 50 timed calls after 5 untimed ones."""
    return cuda_time_ms(fn, warmup=5, repeats=50)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from workbench.builder.quantization import numerics as nq
    from workbench.plugins.quant_gemm import w4a16_gemm, w8a16_gemm

    torch.manual_seed(0)
    rows, totals = [], {}
    for m in (1, 8):
        for name, (k, n) in SHAPES.items():
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            s8 = (w.float().abs().amax(1) / 127.0).contiguous()
            q8 = nq.quantize_int8(w.float(), s8[:, None]).to(torch.int8).contiguous()
            s4, z4 = nq.int4_group_params(w.float(), 128)
            q4 = nq.pack_int4(nq.quantize_int4(w.float(), s4, z4, 128))
            s4, z4 = s4.float().contiguous(), z4.to(torch.uint8).contiguous()
            ref8 = TF.linear(x.float(), (q8.float() * s8[:, None]))
            err8 = ((w8a16_gemm(x, q8, s8).float() - ref8).norm() / ref8.norm()).item()
            t = {"bf16": timed_ms(lambda: TF.linear(x, w)), "w8a16": timed_ms(lambda: w8a16_gemm(x, q8, s8)),
                 "w4a16": timed_ms(lambda: w4a16_gemm(x, q4, s4, z4, 128))}
            rows.append({"batch": m, "layer": name, "k": k, "n": n, **{f"{k2}_ms": round(v, 4) for k2, v in t.items()},
                         "w8a16_rel_err": err8})
            for k2, v in t.items():
                totals[(m, k2)] = totals.get((m, k2), 0.0) + v
            del w, q8, q4
    summary = {f"batch{m}": {"decoder_gemms_ms_per_layer": {k2: round(totals[(m, k2)], 4) for k2 in ("bf16", "w8a16", "w4a16")},
                             "w8a16_speedup_over_bf16": round(totals[(m, "bf16")] / totals[(m, "w8a16")], 3),
                             "w4a16_speedup_over_bf16": round(totals[(m, "bf16")] / totals[(m, "w4a16")], 3)}
               for m in (1, 8)}
    result = {"benchmark": "quant_gemm_gpu", "shapes": "Llama-3-8B decoder linears", "machine": machine(),
              "rows": rows, "summary": summary}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quant_gemm_h100.json").write_text(json.dumps(result, indent=2))
    for r in rows:
        print(r)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
