"""Weight-only quantized decode on one GPU: int8 (W8A16, per channel) and int4 (W4A16, group 128) engines
beside the bf16 engine they are quantized from, in one process.

    python bench/decode_quant.py                       # Llama-3-8B and Llama-3.2-1B shapes, batch 1 and 8
    python bench/decode_quant.py --models llama-3-8b --batches 1

Random-weight Llama shapes (bench/gpu_models.py), bf16 activations; the quantization passes run on the
device over the bf16 engine's weights (the decoder's qkv, o_proj, gate_up and down; embeddings, norms
and the logits layer stay bf16, as `wb build --quant` leaves them; the `*_logits` modes quantize the
logits layer too, as `wb build --quant ... --quant-logits` does). Every engine runs the `cuda`
backend with the GEMV configs of bench/gemv_sweep.py's table when its JSON is there (the same table
for all three, so bf16 gets its best GEMVs too), CUDA-graph decode steps fed back on the device, timed
with CUDA events: prompt 128, 256 new tokens, greedy. Reports tokens/s, the ratio to bf16, and the
fraction of each engine's own roofline (its weight + KV bytes per step over the copy bandwidth
measured in this run). Correctness: each quantized engine's logits for one prompt on the fast path
against the reference backend (torch ops on the same device), and greedy agreement with bf16.
Writes bench/results/decode_quant_h100.json (and $OUT/ when set).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import RESULTS, machine, write_result  # noqa: E402
from decode import kv_bytes_per_step  # noqa: E402
from gpu_models import copy_bandwidth, device_name, engine_from_hf, hf_model, sweep_table, weight_bytes  # noqa: E402

# mode -> (method, the logits layer quantized too: `wb build --quant-logits`)
MODES = {"bf16": None, "int8_wo": ("int8_wo", False), "int4_wo": ("int4_wo", False),
         "int8_wo_logits": ("int8_wo", True), "int4_wo_logits": ("int4_wo", True)}


def quantized(engine, method: str, logits: bool = False):
    """The engine with its decoder linears (and the logits layer when `logits`) quantized by `method`."""
    from dataclasses import replace

    from workbench.builder.engine import Engine
    from workbench.builder.quantization import QuantConfig, apply_quantization
    from workbench.builder.quantization.config import DEFAULT_TARGETS

    qc = QuantConfig(method=method, targets=DEFAULT_TARGETS + (["logits"] if logits else []))
    net = apply_quantization(engine.network, qc)
    return Engine(network=net, architecture=engine.architecture, model_config=engine.model_config,
                  build_config=replace(engine.build_config, quant=qc), source=engine.source)


def check(engine, prompt: list[int]) -> dict:
    """The fast path's logits for one prompt against the reference backend on the same device."""
    from workbench.runtime.cuda_executor import CudaExecutor
    from workbench.runtime.executor import Executor

    ref = Executor(engine, "cuda").forward([prompt])[0]["logits"].float()
    got = CudaExecutor(engine, "cuda", graphs=False).forward([prompt])[0]["logits"].float()
    return {"logits_rel_err": round(((got - ref).norm() / ref.norm()).item(), 6),
            "argmax_agreement": round((got.argmax(-1) == ref.argmax(-1)).float().mean().item(), 4)}


def run_model(name: str, args, bw: float, policy_table: dict | None, out: dict) -> None:
    from workbench.builder.config import BuildConfig
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy
    from workbench.runtime.kv_cache import PagedKVCache

    hf = hf_model(name)
    bc = BuildConfig(dtype="bfloat16", max_batch_size=max(args.batches), max_seq_len=args.prompt + args.new_tokens + 16,
                     kv_page_size=16)
    base = engine_from_hf(hf, bc)
    layers, kvh, hd = hf.config.num_hidden_layers, hf.config.num_key_value_heads, hf.config.head_dim
    del hf
    torch.cuda.empty_cache()
    cache = PagedKVCache.for_budget(layers, kvh, hd, max_tokens=max(args.batches) * bc.max_seq_len + 64, page_size=16,
                                    dtype=torch.bfloat16, device="cuda")
    g = torch.Generator().manual_seed(1)
    prompts = {b: torch.randint(0, base.model_config["vocab_size"], (b, args.prompt), generator=g).tolist()
               for b in args.batches}
    tokens = {}
    runs_of = [(mode, False) for mode in args.modes.split(",")]
    runs_of += [(mode, True) for mode in filter(None, args.plain_modes.split(","))]  # the same, PDL off
    for mode, plain in runs_of:
        engine = base if MODES[mode] is None else quantized(base, *MODES[mode])
        row = out.setdefault(mode + ("_no_pdl" if plain else ""), {})
        if mode != "bf16" and not plain:
            row["check"] = check(engine, prompts[args.batches[0]][0])
        ex = CudaExecutor(engine, "cuda", gemv=GemvPolicy("table", policy_table), pdl=False if plain else "auto")
        wb = weight_bytes(engine)
        row["weight_bytes_per_step"] = wb["linear"] + wb["norms"]
        for b in args.batches:
            ex.generate_greedy(cache, prompts[b], 8)  # capture + compile
            runs = [ex.generate_greedy(cache, prompts[b], args.new_tokens) for _ in range(args.repeats)]
            ms = sorted(r.decode_ms for r in runs)[len(runs) // 2]
            step = ms / (args.new_tokens - 1)
            nbytes = wb["linear"] + wb["norms"] + b * wb["embedding_row"] + kv_bytes_per_step(engine, b, args.prompt,
                                                                                               args.new_tokens)
            floor = nbytes / bw * 1e3
            r = {"decode_tokens_per_s": round(b * (args.new_tokens - 1) / (ms / 1e3), 1), "step_ms": round(step, 4),
                 "bytes_per_step": int(nbytes), "roofline_fraction": round(floor / step, 4)}
            r["graph"] = ex.graph_report().get(ex.bucket(b))
            if plain:
                r["step_over_auto_pdl"] = round(step / out[mode][f"batch{b}"]["step_ms"], 3) if mode in out else None
                r["same_tokens_as_auto_pdl"] = bool(torch.equal(runs[0].tokens.cpu(), tokens[mode, b]))
                row[f"batch{b}"] = r
                print(f"[{name}] {mode} without PDL batch {b}: {r['decode_tokens_per_s']} tok/s, step {step:.3f} ms "
                      f"(x{r['step_over_auto_pdl']} the step of the auto choice)", flush=True)
                continue
            tokens[mode, b] = runs[0].tokens.cpu()
            if mode != "bf16" and ("bf16", b) in tokens:
                base_r = out["bf16"][f"batch{b}"]
                r["over_bf16"] = round(r["decode_tokens_per_s"] / base_r["decode_tokens_per_s"], 3)
                same = (tokens[mode, b] == tokens["bf16", b]).cumprod(1).sum(1)
                r["greedy_prefix_equal_to_bf16"] = same.tolist()
            row[f"batch{b}"] = r
            print(f"[{name}] {mode} batch {b}: {r['decode_tokens_per_s']} tok/s, step {step:.3f} ms, "
                  f"roofline {r['roofline_fraction']:.1%}" + (f", x{r['over_bf16']} bf16" if "over_bf16" in r else "")
                  + f"; graph {r['graph']}", flush=True)
        ex.release_graphs()
        del ex
        if engine is not base:
            del engine
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-3-8b,llama-3.2-1b")
    ap.add_argument("--modes", default="bf16,int8_wo,int4_wo")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep", default=str(RESULTS / "gemv_sweep_h100.json"),
                    help="comma list of bench/gemv_sweep.py JSON files whose `table`s set the GEMV configs, later "
                         "files overriding earlier ones (none there: the built-in table)")
    ap.add_argument("--plain-modes", default="bf16,int8_wo",
                    help="modes timed again with plain launches (no programmatic dependent launch); empty: none")
    ap.add_argument("--name", default="decode_quant_h100")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    table, table_from = sweep_table(args.sweep)
    bw = copy_bandwidth()
    from workbench.plugins.common import use_pdl

    result = {"benchmark": "decode_quant", "device": device_name(), "machine": machine(), "prompt_tokens": args.prompt,
              "pdl": use_pdl(),
              "new_tokens": args.new_tokens, "repeats": args.repeats, "gemv_table": table_from,
              "copy_bandwidth_TBps": round(bw / 1e12, 3), "models": {}}
    print(f"{device_name()}: copy bandwidth {bw / 1e12:.2f} TB/s; GEMV table {table_from}", flush=True)
    start = time.perf_counter()
    for name in args.models.split(","):
        out = result["models"].setdefault(name, {})
        try:
            run_model(name, args, bw, table, out)
        except Exception as e:  # keep what was measured
            out["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        torch.cuda.empty_cache()
    result["wall_s"] = round(time.perf_counter() - start, 1)
    path = write_result(args.name, result)
    print(f"-> {path}")
    for name, m in result["models"].items():
        for b in args.batches:
            cells = [f"{mode} {m.get(mode, {}).get(f'batch{b}', {}).get('decode_tokens_per_s', '-')}"
                     f" (x{m.get(mode, {}).get(f'batch{b}', {}).get('over_bf16', 1)})" for mode in args.modes.split(",")]
            print(f"{name:14s} b{b}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
