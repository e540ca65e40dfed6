"""The decode step's linear layers (few rows): cuBLAS beside the GEMV plugin's configs, for bf16 weights
and for the weight-only quantized formats (int8 per channel, int4 per group of 128).

    python bench/gemv_sweep.py                            # all formats, both shapes
    python bench/gemv_sweep.py --formats bf16 --models 8b

Shapes of Llama-3.2-1B and Llama-3-8B (qkv, o, gate_up, down, logits; the quantized logits layer of
`--quant-logits` engines too) at 1 and 8 rows (`--rows`). Each variant is timed as 20 calls captured in
one CUDA graph (as the decode step runs them), cycling through weight copies larger than L2 together
so every call reads device memory. Configs: tensor-core dot tiles (any rows) and, for one row, fp32
multiply-add tiles. For the MLP's gate_up projection it also times the GEMV writing silu(gate) * up
(`swiglu`) against the best GEMV followed by the activation kernel.

Reports microseconds per call and GB/s of weights read; the JSON's `table` is the winning config per
(format, rows, N, K), what runtime.cuda_executor's GEMV table is made from (bench/decode*.py read it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from gpu_models import cuda_time_ms, device_name  # noqa: E402

SHAPES = {"1b": [(3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192), (128256, 2048)],
          "8b": [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096)]}
GATE_UP = {"1b": (16384, 2048), "8b": (28672, 4096)}
DOT = [(16, 256, 1, 4, 4), (32, 256, 1, 4, 4), (64, 128, 1, 4, 4), (16, 512, 1, 4, 3), (32, 512, 1, 8, 3),
       (64, 256, 1, 8, 3), (16, 256, 2, 4, 4), (32, 256, 4, 4, 4), (16, 512, 4, 4, 3)]
FMA = [(8, 512, 1, 4, 4), (16, 256, 1, 4, 4), (16, 512, 1, 4, 3), (32, 256, 1, 4, 4), (32, 256, 1, 8, 3),
       (64, 256, 1, 8, 3), (32, 512, 1, 8, 3), (16, 1024, 1, 8, 2), (16, 256, 2, 4, 4), (32, 256, 4, 4, 4),
       (16, 512, 4, 4, 3)]
FMA_QUANT = [(16, 1024, 1, 4, 3), (32, 1024, 1, 8, 3), (64, 512, 1, 8, 3), (8, 1024, 1, 4, 4), (16, 512, 2, 4, 4),
             (32, 512, 1, 4, 4), (16, 128, 1, 4, 4), (32, 128, 1, 4, 4), (64, 128, 1, 8, 3), (16, 2048, 1, 8, 3),
             (32, 512, 2, 4, 4), (32, 512, 1, 8, 3), (64, 512, 2, 8, 3), (32, 1024, 2, 8, 3), (64, 256, 1, 4, 4),
             (8, 512, 1, 4, 1), (8, 1024, 1, 4, 1), (16, 512, 1, 4, 1), (8, 512, 2, 4, 2), (8, 256, 1, 4, 2),
             (8, 512, 1, 8, 2), (16, 512, 1, 8, 2), (8, 2048, 1, 8, 2), (4, 1024, 1, 4, 2), (4, 512, 1, 2, 2)]
# one row, word tiles (int8, int4): stages 1 loads each tile where it is used, more prefetch the next one
TMA = [(8, 256, 1, 4, 4), (8, 256, 1, 4, 6), (16, 256, 1, 4, 4), (16, 256, 1, 8, 4), (32, 256, 1, 8, 3),
       (16, 128, 1, 4, 6), (32, 128, 1, 4, 4), (8, 128, 1, 2, 8), (4, 256, 1, 2, 6), (64, 128, 1, 8, 3),
       (16, 256, 2, 4, 4), (8, 256, 2, 4, 4)]
TMA_INT8 = [(8, 1024, 1, 4, 4), (8, 1024, 1, 4, 6), (16, 512, 1, 4, 4), (16, 1024, 1, 8, 4), (32, 512, 1, 8, 3),
            (4, 1024, 1, 2, 6), (16, 512, 2, 4, 4), (8, 512, 1, 4, 6), (32, 256, 1, 4, 4), (64, 256, 1, 8, 3),
            (8, 1024, 2, 4, 4), (4, 1024, 1, 2, 8), (8, 1024, 1, 4, 8), (16, 1024, 1, 8, 6), (32, 512, 1, 8, 4),
            (16, 512, 1, 4, 8), (8, 512, 1, 4, 8), (32, 1024, 1, 8, 3), (64, 512, 1, 8, 3), (16, 256, 1, 4, 8)]
TMA_INT4 = [(16, 128, 1, 4, 4), (32, 128, 1, 4, 4), (64, 128, 1, 4, 4), (32, 128, 1, 8, 4), (64, 128, 1, 8, 4),
            (16, 128, 1, 4, 8), (32, 128, 1, 4, 6), (64, 128, 1, 8, 3), (8, 128, 1, 4, 8), (32, 64, 1, 4, 8),
            (64, 64, 1, 4, 6), (128, 128, 1, 8, 3), (16, 128, 2, 4, 4), (32, 128, 2, 4, 4)]
# one row, tiles brought into shared memory by TMA copies, num_stages of them in flight (float, int8 and int4
# weights; int4 tiles within a group of 128)
TIMES: dict[str, float] = {}  # every config best_config timed, for the result file
FAMILIES = {"dot", "fma", "tma", "table"}  # which configs best_config tries (--families); table: the built-in one
CALLS = 20
GROUP = 128


def time_graph(fn_list) -> float:
    """Microseconds per call of the functions, captured back to back in one graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fn_list:
            f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fn_list:
            f()
    return cuda_time_ms(g.replay, warmup=3, repeats=10) * 1e3 / len(fn_list)


def make_weights(fmt: str, n: int, k: int, copies: int) -> list[dict]:
    """`copies` random weight sets of one format (dequantized values of std about 1/sqrt(k))."""
    out = []
    for _ in range(copies):
        if fmt == "bf16":
            out.append({"w": torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5})
        elif fmt == "w8a16":
            out.append({"q": torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8),
                        "s": torch.full((n,), 1 / (73 * k ** 0.5), device="cuda")})
        else:
            out.append({"q": torch.randint(0, 256, (n, k // 2), device="cuda", dtype=torch.uint8),
                        "s": torch.full((n, k // GROUP), 1 / (4.6 * k ** 0.5), device="cuda"),
                        "z": torch.full((n, k // GROUP), 8, device="cuda", dtype=torch.uint8)})
    return out


def dense(fmt: str, w: dict) -> torch.Tensor:
    """The fp32 weights a set stands for (the reference product's)."""
    from workbench.builder.quantization import numerics as nq

    if fmt == "bf16":
        return w["w"].float()
    if fmt == "w8a16":
        return w["q"].float() * w["s"][:, None]
    return nq.dequantize_int4(nq.unpack_int4(w["q"]), w["s"], w["z"], GROUP)


def call(fmt: str, x, w: dict, cfg, swiglu: bool = False):
    """One GEMV of the format (cfg None: cuBLAS, bf16 only, then the activation kernel when swiglu)."""
    from workbench.plugins.activation import silu_and_mul
    from workbench.plugins.gemv import gemv, w4a16_gemv, w8a16_gemv

    if fmt == "bf16":
        if cfg is None:
            y = TF.linear(x, w["w"])
            return silu_and_mul(y) if swiglu else y
        return gemv(x, w["w"], None, cfg, swiglu)
    if fmt == "w8a16":
        return w8a16_gemv(x, w["q"], w["s"], None, cfg, swiglu)
    return w4a16_gemv(x, w["q"], w["s"], w["z"], GROUP, None, cfg, swiglu)


def best_config(fmt, x, ws, n, m, ref, swiglu=False):
    """(us, config) of the fastest correct config, and the errors of any wrong ones (or that do not compile)."""
    from workbench.runtime.gemv_policy import H100_GEMV

    best, errors = None, {}
    fma = FMA + (FMA_QUANT if fmt != "bf16" else [])
    configs = (DOT if "dot" in FAMILIES else []) + ([c + (False,) for c in fma] if m == 1 and "fma" in FAMILIES else [])
    if "tma" in FAMILIES and (m == 1 or fmt == "w4a16"):  # int4 TMA tiles take several rows too
        configs += [c + ("tma",) for c in {"bf16": TMA, "w8a16": TMA_INT8, "w4a16": TMA_INT4}[fmt]]
        if fmt == "w4a16" and m > 1:  # the same tiles multiplying on the tensor cores
            configs += [c + ("tma_dot",) for c in TMA_INT4]
        if fmt == "w8a16":  # the same tiles unpacking by byte permutes
            configs += [c + ("tma_prmt",) for c in TMA_INT8]
    key = (1 if m == 1 else 8, n, x.shape[1]) + (() if fmt == "bf16" else (fmt,)) + (("swiglu",) if swiglu else ())
    if "table" in FAMILIES and key in H100_GEMV and tuple(H100_GEMV[key]) not in configs:
        configs.append(tuple(H100_GEMV[key]))
    for cfg in configs:
        if cfg[2] > 1 and n >= 16384:
            continue  # big N has enough programs without splitting K
        try:
            y = call(fmt, x, ws[0], cfg, swiglu).float()
        except Exception as e:  # e.g. more shared memory than the device has
            errors[str(cfg)] = f"{type(e).__name__}: {e}"[:200]
            continue
        err = ((y - ref).norm() / ref.norm()).item()
        if not err < 1e-2:
            errors[str(cfg)] = err
            continue
        us = time_graph([lambda i=i: call(fmt, x, ws[i % len(ws)], cfg, swiglu) for i in range(CALLS)])
        TIMES[str(cfg)] = round(us, 2)
        if best is None or us < best[0]:
            best = (us, cfg)
    return best, errors


@torch.inference_mode()
def main() -> None:
    from workbench.plugins.activation import silu_and_mul

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="bf16,w8a16,w4a16")
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--rows", default="1,8")
    ap.add_argument("--name", default="gemv_sweep_h100")
    ap.add_argument("--families", default="dot,fma,tma,table",
                    help="configs to try: dot, fma (register tiles), tma, table (the built-in config)")
    args = ap.parse_args()
    FAMILIES.clear()
    FAMILIES.update(args.families.split(","))
    rows_out, table = [], []
    for model in args.models.split(","):
        for fmt in args.formats.split(","):
            for n, k in SHAPES[model]:
                size = n * k * {"bf16": 2, "w8a16": 1, "w4a16": 0.5}[fmt]
                copies = max(2, min(CALLS, -(-(160 << 20) // int(size))))
                ws = make_weights(fmt, n, k, copies)
                w0 = dense(fmt, ws[0])
                for m in map(int, args.rows.split(",")):
                    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                    ref = x.float() @ w0.T
                    res = {"model": model, "format": fmt, "n": n, "k": k, "rows": m}
                    if fmt == "bf16":
                        res["cublas_us"] = round(time_graph([lambda i=i: call(fmt, x, ws[i % copies], None)
                                                             for i in range(CALLS)]), 2)
                    TIMES.clear()
                    best, errors = best_config(fmt, x, ws, n, m, ref)
                    res["times_us"] = dict(TIMES)
                    if errors:
                        res["errors"] = errors
                    res["triton_us"], res["triton_config"] = round(best[0], 2), list(best[1])
                    res["triton_GBps"] = round(size / res["triton_us"] / 1e3, 1)
                    line = f"{model} {fmt:5s} N={n:6d} K={k:5d} M={m}: Triton {res['triton_us']:8.2f} us " \
                           f"({res['triton_GBps']:6.0f} GB/s) {tuple(best[1])}"
                    if fmt == "bf16":
                        res["cublas_GBps"] = round(size / res["cublas_us"] / 1e3, 1)
                        line += f"  cuBLAS {res['cublas_us']:8.2f} us ({res['cublas_GBps']:6.0f} GB/s)"
                    if (n, k) == GATE_UP[model]:  # the activation written by the gate_up GEMV, or a kernel of its own
                        sref = silu_and_mul(ref.to(torch.bfloat16)).float()
                        TIMES.clear()
                        sbest, _ = best_config(fmt, x, ws, n, m, sref, swiglu=True)
                        res["swiglu_times_us"] = dict(TIMES)
                        plain = best[1] if fmt != "bf16" or best[0] < res["cublas_us"] else None
                        unfused = time_graph([lambda i=i: silu_and_mul(call(fmt, x, ws[i % copies], plain))
                                              for i in range(CALLS)])
                        if sbest is not None:
                            res["swiglu_us"], res["swiglu_config"] = round(sbest[0], 2), list(sbest[1])
                        res["gemv_then_activation_us"] = round(unfused, 2)
                        line += f"  | swiglu {res.get('swiglu_us')} us vs GEMV + activation {unfused:.2f} us"
                    rows_out.append(res)
                    wins = fmt != "bf16" or res["triton_us"] < res["cublas_us"]
                    if wins:
                        table.append({"format": fmt, "rows": m, "n": n, "k": k, "config": list(best[1])})
                    if "swiglu_us" in res and res["swiglu_us"] < res["gemv_then_activation_us"]:
                        table.append({"format": fmt, "rows": m, "n": n, "k": k, "config": res["swiglu_config"],
                                      "swiglu": True})
                    print(line, flush=True)
                ws = None  # frees the copies before the next shape
                torch.cuda.empty_cache()
                path = save(args.name, rows_out, table)  # after every shape: a run cut short keeps its numbers
    print(f"-> {path}")


def save(name: str, rows: list, table: list) -> Path:
    """Write the sweep so far (bench/results and $OUT, by write_result)."""
    result = {"benchmark": "gemv_sweep", "device": device_name(), "machine": machine(), "calls_per_graph": CALLS,
              "rows": rows, "table": table}
    return write_result(name, result)


if __name__ == "__main__":
    main()
