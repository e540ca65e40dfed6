"""Where a layer's time goes in a captured decode step of layer blocks: the decode attention and layer block kernels
stamp the GPU's global timer at their edges (WB_PROBE_TRACE=1, set by this script), and the last step's stamps are
lined up layer by layer.

    python bench/block_trace.py                         # Llama-3.2-1B shapes, bf16, batch 1
    python bench/block_trace.py --models llama-3-8b --modes bf16,int8_wo_logits

For each middle layer, times in us from the end of the block before (its last program's end), the median over the
layers: when attention's programs start, pass their wait and end; when the next block's producers start, fill their
ring and get their first slot back; when its consumers pass their wait; and each stage's end. Then each stage's
time against its weight bytes at the copy bandwidth measured in the same run.

Random-weight Llama shapes (bench/gpu_models.py), prompt 128, 64 new tokens, the built-in GEMV table.
Writes bench/results/block_trace_h100.json (and $OUT/ when set).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from decode_quant import MODES, quantized  # noqa: E402
from gpu_models import copy_bandwidth, decode_setup, device_name  # noqa: E402

# the block's events (plugins/decode_block.py's _stamp)
BLOCK = {"start": 0, "waited": 1, "o_own": 2, "o_all": 3, "gu_own": 4, "gu_all": 5, "dn_own": 6, "dn_all": 7,
         "end": 8, "prod_start": 9, "ring_full": 10, "slot_back": 11, "prod_o_issued": 12, "prod_end": 13}


def quantiles(values: list[float]) -> list[float]:
    """[min, median, max], rounded."""
    return [round(min(values), 2), round(statistics.median(values), 2), round(max(values), 2)]


def layer_rows(blocks: list[torch.Tensor], attns: list[torch.Tensor]) -> list[dict]:
    """For every block after the first whose attention and previous block were traced: its events and its
    attention's, each as [min, median, max] over the programs in us from the previous block's end."""
    blocks = sorted(blocks, key=lambda t: int(t[:, [0, 9]][t[:, [0, 9]] > 0].min()))
    attns = sorted(attns, key=lambda t: int(t[:, 0][t[:, 0] > 0].min()))
    rows = []
    for prev, att, blk in zip(blocks, attns[1:], blocks[1:]):
        t0 = int(prev[:, BLOCK["end"]].max())
        us = lambda col: [(int(v) - t0) / 1e3 for v in col if int(v) > 0]  # noqa: E731 (0: not stamped)
        row = {f"attn_{name}": quantiles(us(att[:, i])) for i, name in enumerate(("start", "waited", "end"))}
        row.update({name: quantiles(us(blk[:, i])) for name, i in BLOCK.items() if us(blk[:, i])})
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    """Each event's [min, median, max] over the programs, the median over the layers."""
    return {k: [round(statistics.median(r[k][j] for r in rows), 2) for j in range(3)] for k in rows[0]}


def run_model(name: str, args, bw: float, out: dict) -> None:
    from workbench.plugins import decode_block as db
    from workbench.plugins import paged_attention as pa
    from workbench.runtime.cuda_executor import CudaExecutor

    base, cache, prompt, cfg = decode_setup(name, args.prompt, args.new_tokens)
    kvh, hd, h, i = cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size, cfg.intermediate_size
    for mode in args.modes.split(","):
        engine = base if MODES[mode] is None else quantized(base, *MODES[mode])
        db.TRACES.clear()
        pa.TRACES.clear()
        ex = CudaExecutor(engine, "cuda")
        ex.generate_greedy(cache, [prompt], 8)
        ex.generate_greedy(cache, [prompt], args.new_tokens)  # the stamps left are its last step's
        torch.cuda.synchronize()
        rows = layer_rows(list(db.TRACES.values()), list(pa.TRACES.values()))
        if not rows:
            print(f"[{name}] {mode}: no layer blocks traced (not an H100-table shape?)", flush=True)
            continue
        per = 2 if MODES[mode] is None else 1  # bytes a weight: bf16 2, int8 1
        weights = {"o": h * h, "gu": 2 * i * h, "dn": h * i, "qkv": (cfg.num_attention_heads + 2 * kvh) * hd * h}
        ideal = {k: round(n * per / bw * 1e6, 2) for k, n in weights.items()}  # us at the copy bandwidth
        s = summary(rows[:-1])  # the last block streams the logits layer instead of a qkv
        med = {k: v[1] for k, v in s.items()}
        stages = {"o": med["o_all"] - med["waited"], "gu": med["gu_all"] - med["o_all"],
                  "dn": med["dn_all"] - med["gu_all"], "qkv": med["end"] - med["dn_all"]}
        out.setdefault(name, {})[mode] = {"events_us": s, "stage_us": {k: round(v, 2) for k, v in stages.items()},
                                          "stage_ideal_us": ideal, "layers": len(rows) - 1}
        print(f"[{name}] {mode}: {len(rows) - 1} layers, us from the block before's end (min / median / max over "
              "programs, median over layers):", flush=True)
        for k, v in s.items():
            print(f"  {k:>14}: {v[0]:8.2f} {v[1]:8.2f} {v[2]:8.2f}")
        print("  stages (median programs): " + ", ".join(f"{k} {stages[k]:.2f} us (bytes at the copy bandwidth "
                                                        f"{ideal[k]:.2f})" for k in stages), flush=True)
        ex.release_graphs()
        del ex
        torch.cuda.empty_cache()


def main() -> None:
    if "workbench.plugins.decode_block" in sys.modules:
        raise SystemExit("block_trace: the plugins were imported before WB_PROBE_TRACE was set")
    os.environ["WB_PROBE_TRACE"] = "1"  # before the plugins are imported (in run_model): a constant of their kernels
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-3.2-1b")
    ap.add_argument("--modes", default="bf16")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--name", default="block_trace_h100")
    args = ap.parse_args()
    bw = copy_bandwidth()
    print(f"{device_name()}: copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    out: dict = {"machine": machine(), "device": device_name(), "copy_bandwidth_tbs": round(bw / 1e12, 3)}
    for name in args.models.split(","):
        run_model(name, args, bw, out)
    write_result(args.name, out)


if __name__ == "__main__":
    main()
