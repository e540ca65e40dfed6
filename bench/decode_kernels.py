"""Where a decode step's time goes, kernel by kernel: the captured CUDA-graph step of the `cuda` backend
under torch.profiler (CUPTI), for random-weight Llama shapes in bf16 and weight-only int8.

    python bench/decode_kernels.py                         # 8B bf16 and int8, 1B bf16; batch 1
    python bench/decode_kernels.py --runs llama-3-8b:int8_wo_logits

Each run generates twice (8 and 40 new tokens) under the profiler; the difference of the two, per
kernel name, over the 32 extra steps is one decode step's kernels (prefill and set-up cancel out).
Plain launches (no PDL), so a kernel's duration is its own work and not time spent waiting on the
one before it. Reports per kernel: launches and microseconds per step, and the step's measured time
beside the sum of its kernels (the rest is launch gaps). Writes bench/results/decode_kernels_h100.json.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from decode_quant import MODES, quantized  # noqa: E402
from gpu_models import device_name, engine_from_hf, hf_model, sweep_table  # noqa: E402


def kernel_us(ex, cache, prompt: list[int], new_tokens: int) -> dict[str, list[float]]:
    """Per kernel name: [launches, total microseconds] of one greedy generation under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ex.generate_greedy(cache, [prompt], new_tokens)
        torch.cuda.synchronize()
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            row = out[ev.name]
            row[0] += 1
            row[1] += ev.device_time
    return out


def one_run(model: str, mode: str, table: dict | None, prompt_len: int) -> dict:
    from workbench.builder.config import BuildConfig
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy
    from workbench.runtime.kv_cache import PagedKVCache

    hf = hf_model(model)
    bc = BuildConfig(dtype="bfloat16", max_batch_size=1, max_seq_len=prompt_len + 64, kv_page_size=16)
    engine = engine_from_hf(hf, bc)
    layers, kvh, hd = hf.config.num_hidden_layers, hf.config.num_key_value_heads, hf.config.head_dim
    del hf
    if MODES[mode] is not None:
        engine = quantized(engine, *MODES[mode])
    torch.cuda.empty_cache()
    cache = PagedKVCache.for_budget(layers, kvh, hd, max_tokens=bc.max_seq_len + 64, page_size=16,
                                    dtype=torch.bfloat16, device="cuda")
    prompt = torch.randint(0, engine.model_config["vocab_size"], (prompt_len,), generator=torch.Generator().manual_seed(1))
    prompt = prompt.tolist()
    ex = CudaExecutor(engine, "cuda", gemv=GemvPolicy("table", table), pdl=False)
    ex.generate_greedy(cache, [prompt], 8)  # capture and compile
    step_ms = sorted(ex.generate_greedy(cache, [prompt], 40).decode_ms / 39 for _ in range(3))[1]
    short = kernel_us(ex, cache, prompt, 8)
    long = kernel_us(ex, cache, prompt, 40)
    steps = 32
    kernels = []
    for name, (n, us) in long.items():
        n0, us0 = short.get(name, (0, 0.0))
        per_step = (us - us0) / steps
        if n - n0 > 0:
            kernels.append({"kernel": name[:120], "launches_per_step": round((n - n0) / steps, 2),
                            "us_per_step": round(per_step, 2)})
    kernels.sort(key=lambda r: -r["us_per_step"])
    total = sum(r["us_per_step"] for r in kernels)
    ex.release_graphs()
    return {"model": model, "mode": mode, "step_ms_measured": round(step_ms, 4), "kernels_us_per_step": round(total, 1),
            "launches_per_step": round(sum(r["launches_per_step"] for r in kernels), 1), "kernels": kernels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="llama-3-8b:bf16,llama-3-8b:int8_wo,llama-3.2-1b:bf16")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--sweep", default="", help="GEMV sweep JSON files (comma-separated); empty: the built-in table")
    ap.add_argument("--name", default="decode_kernels_h100")
    args = ap.parse_args()
    table = sweep_table(args.sweep)[0] if args.sweep else None
    results = []
    for spec in args.runs.split(","):
        model, mode = spec.split(":")
        r = one_run(model, mode, table, args.prompt)
        results.append(r)
        print(f"[{model} {mode}] step {r['step_ms_measured']:.3f} ms measured; kernels {r['kernels_us_per_step']:.1f} us "
              f"in {r['launches_per_step']} launches", flush=True)
        for k in r["kernels"][:14]:
            print(f"    {k['us_per_step']:9.1f} us  x{k['launches_per_step']:<6} {k['kernel'][:90]}", flush=True)
        torch.cuda.empty_cache()
        result = {"benchmark": "decode_kernels", "device": device_name(), "machine": machine(), "prompt": args.prompt,
                  "gemv_table": args.sweep or "built-in", "runs": results}
        path = write_result(args.name, result)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
