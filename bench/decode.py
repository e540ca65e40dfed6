"""Decode throughput on one GPU: the engine's `cuda` fast path beside HF transformers, in one process.

    python bench/decode.py                                  # both shapes, batch 1 and 8, all peers
    python bench/decode.py --models llama-3.2-1b --peers none --batches 1

Random-weight Llama-3.2-1B and Llama-3-8B shapes in bf16, built on the GPU (no download); prompt 128
tokens, 256 new tokens, greedy. Peers: HF eager (`generate`, sdpa attention, dynamic cache) and HF
with a static cache, which `generate` compiles with torch.compile on first use (its compile time is
reported apart). Engine decode: CUDA-graph steps fed back on the device (`generate_greedy`), timed
with CUDA events; decode tokens/s = batch x 255 steps / decode time.

Roofline: per step the weights are read once (every linear and norm; one embedding row per token)
and each sequence's KV cache up to its length; bytes per step / the device-to-device copy bandwidth
measured in this run is the floor; `roofline_fraction` = floor / measured step time. The debug engine
(every canonical name of every layer marked, each step's marked tensors kept) is timed the same way.
Writes bench/results/decode_h100.json (and $OUT/decode_h100.json when $OUT is set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from gpu_models import (copy_bandwidth, device_name, engine_from_hf, hf_model, sweep_table, wall_s,  # noqa: E402
                        weight_bytes)


def kv_bytes_per_step(engine, batch: int, prompt: int, new: int) -> float:
    """Mean KV bytes a decode step reads and writes: every layer's keys and values up to each length."""
    attn = [n for n in engine.network.nodes.values() if n.op == "attention"]
    per_token = sum(2 * n.attrs["num_kv_heads"] * n.attrs["head_dim"] * 2 for n in attn)  # k and v, bf16
    mean_read = prompt + new / 2  # step i (1 .. new-1) reads prompt + i keys
    return batch * per_token * (mean_read + 1)  # + the one it writes


def bench_engine(hf, name, args, bw, out, deadline, gemv: str, key: str, debug: bool, table=None):
    from workbench.builder.build import debug_engine
    from workbench.builder.config import BuildConfig
    from workbench.names import canonical_names
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy
    from workbench.runtime.kv_cache import PagedKVCache

    max_batch = max(args.batches)
    bc = BuildConfig(dtype="bfloat16", max_batch_size=max_batch, max_seq_len=args.prompt + args.new_tokens + 16,
                     kv_page_size=16)
    engine = engine_from_hf(hf, bc)
    layers = hf.config.num_hidden_layers
    cache = PagedKVCache.for_budget(layers, hf.config.num_key_value_heads, hf.config.head_dim,
                                    max_tokens=max_batch * bc.max_seq_len + 64, page_size=16, dtype=torch.bfloat16,
                                    device="cuda")
    policy = GemvPolicy.parse(gemv, table)
    ex = CudaExecutor(engine, "cuda", gemv=policy)
    wb = weight_bytes(engine)
    res = out.setdefault(key, {"gemv": gemv})
    g = torch.Generator().manual_seed(1)
    for b in args.batches:
        prompts = torch.randint(0, hf.config.vocab_size, (b, args.prompt), generator=g).tolist()
        t = time.perf_counter()
        ex.generate_greedy(cache, prompts, 8)  # capture + compile
        capture_s = time.perf_counter() - t
        runs = [ex.generate_greedy(cache, prompts, args.new_tokens) for _ in range(args.repeats)]
        decode_ms = sorted(r.decode_ms for r in runs)[len(runs) // 2]
        step_ms = decode_ms / (args.new_tokens - 1)
        bytes_step = wb["linear"] + wb["norms"] + b * wb["embedding_row"] + kv_bytes_per_step(
            engine, b, args.prompt, args.new_tokens)
        floor_ms = bytes_step / bw * 1e3
        row = {"decode_tokens_per_s": round(b * (args.new_tokens - 1) / (decode_ms / 1e3), 1),
               "step_ms": round(step_ms, 4), "prefill_ms": round(sorted(r.prefill_ms for r in runs)[len(runs) // 2], 3),
               "bytes_per_step": int(bytes_step), "roofline_step_ms": round(floor_ms, 4),
               "roofline_tokens_per_s": round(b / (floor_ms / 1e3), 1),
               "roofline_fraction": round(floor_ms / step_ms, 4), "first_call_s": round(capture_s, 2),
               "tokens": runs[0].tokens[0, :32].tolist()}
        # the debug engine: every canonical name of every layer marked, each step's tensors kept
        if debug and time.perf_counter() < deadline:
            dbg = debug_engine(engine, canonical_names(layers)[:-1])
            dex = CudaExecutor(dbg, "cuda", gemv=policy)
            dex.generate_greedy(cache, prompts, 8, collect=True)
            druns = [dex.generate_greedy(cache, prompts, args.new_tokens, collect=True) for _ in range(args.repeats)]
            dms = sorted(r.decode_ms for r in druns)[len(druns) // 2]
            row["debug"] = {"marked": len(dbg.marked), "decode_tokens_per_s": round(b * (args.new_tokens - 1) / (dms / 1e3), 1),
                            "step_ms": round(dms / (args.new_tokens - 1), 4), "over_plain": round(dms / decode_ms, 4),
                            "same_tokens": bool(torch.equal(druns[0].tokens, runs[0].tokens)),
                            "steps_kept": len(druns[0].step_outputs)}
            del dex, druns
        res[f"batch{b}"] = row
        print(f"[{name}] {key} batch {b}: {row['decode_tokens_per_s']} tok/s, roofline {row['roofline_fraction']:.1%}"
              + (f", debug x{row['debug']['over_plain']}" if "debug" in row else ""), flush=True)
        row["_tokens_tensor"] = runs[0].tokens  # for the peers' agreement check; dropped before writing
    ex.release_graphs()


@torch.inference_mode()
def bench_hf(hf, name, args, out, peer, deadline):
    res = out.setdefault(peer, {})
    g = torch.Generator().manual_seed(1)
    for b in args.batches:
        if time.perf_counter() > deadline:
            res[f"batch{b}"] = {"skipped": "out of the time budget"}
            continue
        ids = torch.randint(0, hf.config.vocab_size, (b, args.prompt), generator=g).cuda()
        kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
        if peer == "hf_static_compile":
            kw["cache_implementation"] = "static"
        t = time.perf_counter()
        first_out = hf.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **kw)  # warm-up (compile)
        torch.cuda.synchronize()
        first_call = time.perf_counter() - t
        ttft = sorted(wall_s(lambda: hf.generate(ids, max_new_tokens=1, **kw), repeats=args.repeats))[args.repeats // 2]
        total = sorted(wall_s(lambda: hf.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                                  **kw), repeats=args.repeats))[args.repeats // 2]
        row = {"decode_tokens_per_s": round(b * (args.new_tokens - 1) / (total - ttft), 1),
               "time_to_first_token_s": round(ttft, 4), "total_s": round(total, 4), "first_call_s": round(first_call, 2)}
        eng = out.get("engine", {}).get(f"batch{b}", {})
        if "_tokens_tensor" in eng:  # greedy agreement with the engine (bf16: near-ties can flip late tokens)
            mine, theirs = eng["_tokens_tensor"].cpu(), first_out[:, args.prompt:].cpu()
            same = (mine == theirs).cumprod(1).sum(1)
            row["tokens_equal_to_engine_prefix"] = same.tolist()
        res[f"batch{b}"] = row
        print(f"[{name}] {peer} batch {b}: {row['decode_tokens_per_s']} tok/s (first call {first_call:.1f} s)", flush=True)


def _save(result: dict, args) -> tuple[Path, dict]:
    """Write what is measured so far (a run cut short keeps its numbers), with engine/peer ratios."""
    clean = json.loads(json.dumps(result, default=lambda o: None))  # drops the token tensors kept for peers
    for m in clean["models"].values():
        for b in args.batches:
            eng = m.get("engine", {}).get(f"batch{b}", {})
            for peer in ("hf_eager", "hf_static_compile"):
                p = m.get(peer, {}).get(f"batch{b}", {})
                if "decode_tokens_per_s" in p and "decode_tokens_per_s" in eng:
                    eng[f"over_{peer}"] = round(eng["decode_tokens_per_s"] / p["decode_tokens_per_s"], 2)
        for v in m.values():
            for row in v.values() if isinstance(v, dict) else []:
                if isinstance(row, dict):
                    row.pop("_tokens_tensor", None)
    path = write_result(args.name, clean)
    return path, clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-3.2-1b,llama-3-8b")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peers", default="hf_eager,hf_static_compile",
                    help="comma list of hf_eager, hf_static_compile, or none")
    ap.add_argument("--compile-models", default="llama-3.2-1b", help="models the compiled peer runs on (compile time)")
    ap.add_argument("--gemv", default="table,cublas",
                    help="GEMV policies to time (runtime.cuda_executor.GemvPolicy.parse: cublas, table, table-swiglu, table-noswiglu, "
                         "triton); the first is reported as `engine`")
    ap.add_argument("--sweep", default="", help="comma list of bench/gemv_sweep.py JSON files whose `table`s set the "
                    "GEMV configs (default: the built-in table)")
    ap.add_argument("--budget-s", type=float, default=400, help="skip what would start after this many seconds")
    ap.add_argument("--name", default="decode_h100")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    start = time.perf_counter()
    deadline = start + args.budget_s
    bw = copy_bandwidth()
    table, table_from = sweep_table(args.sweep)
    result = {"benchmark": "decode", "device": device_name(), "machine": machine(), "dtype": "bfloat16",
              "gemv_table": table_from,
              "prompt_tokens": args.prompt, "new_tokens": args.new_tokens, "repeats": args.repeats, "gemv": args.gemv,
              "copy_bandwidth_TBps": round(bw / 1e12, 3), "models": {}}
    print(f"{device_name()}: copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    peers = [p for p in args.peers.split(",") if p != "none"]
    # engines and the eager peer first, then the compiled peer (slow to compile) while time is left
    phases = [(name, [p for p in peers if p != "hf_static_compile"], True) for name in args.models.split(",")]
    if "hf_static_compile" in peers:
        phases += [(name, ["hf_static_compile"], False) for name in args.models.split(",")]
    for name, phase_peers, engine_too in phases:
        out = result["models"].setdefault(name, {})
        try:
            if not engine_too and name not in args.compile_models.split(","):
                out["hf_static_compile"] = {"skipped": "compile time: not run on this shape (--compile-models)"}
                continue
            hf = hf_model(name)
            if engine_too:
                for i, gemv in enumerate(args.gemv.split(",")):  # the first is the engine's default, timed in full
                    bench_engine(hf, name, args, bw, out, deadline, gemv, "engine" if i == 0 else f"engine_{gemv}", i == 0,
                                 table)
            for peer in phase_peers:
                try:
                    bench_hf(hf, name, args, out, peer, deadline)
                except Exception as e:  # a peer failing must not lose the engine's numbers
                    out[peer] = {"error": f"{type(e).__name__}: {e}"[:500]}
                    traceback.print_exc()
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        finally:
            hf = None
            torch.cuda.empty_cache()
            _save(result, args)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    path, clean = _save(result, args)
    print(f"-> {path}")
    for name, m in clean["models"].items():
        for b in args.batches:
            e = m.get("engine", {}).get(f"batch{b}", {})
            peers = ", ".join(f"{p} {m.get(p, {}).get(f'batch{b}', {}).get('decode_tokens_per_s', '-')}"
                              for p in ("hf_eager", "hf_static_compile"))
            dbg = e.get("debug", {}).get("over_plain", "-")
            cub = m.get("engine_cublas", {}).get(f"batch{b}", {}).get("roofline_fraction", 0)
            print(f"{name:14s} b{b}: engine {e.get('decode_tokens_per_s', '-')} tok/s "
                  f"({e.get('roofline_fraction', 0):.1%} of roofline {e.get('roofline_tokens_per_s', '-')}; all-cuBLAS "
                  f"{cub:.1%}), debug x{dbg} | {peers}")


if __name__ == "__main__":
    main()
