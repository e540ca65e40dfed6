"""The decode step's attention kernel on its own: the paged decode attention with rope (and its partition
merge) of Llama-3.2-1B and Llama-3-8B shapes at batch 1, for several partition sizes and warps a program.

    python bench/attn_sweep.py
    python bench/attn_sweep.py --ctx 128,384

Each variant is timed as 32 calls (a step's layers) captured in one CUDA graph with the launches the step
uses (PDL where the GPU has it), each call over its own KV cache so that, as in a step, the keys and values
come from device memory. Reports microseconds per call. Writes bench/results/attn_sweep_h100.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from gemv_sweep import time_graph  # noqa: E402
from gpu_models import device_name  # noqa: E402

SHAPES = {"1b": (32, 8, 64), "8b": (32, 8, 128)}  # query heads, kv heads, head dim
LAYERS = 32
PAGE = 16
CAPACITY = 400  # tokens a sequence's block table covers (prompt 128 + 256 new + 16, as bench/decode.py builds it)


def one_shape(model: str, ctx: int, variants: list[tuple[int, int]]) -> dict:
    from workbench.plugins import paged_attention as pa
    from workbench.plugins.rotary import rope_table

    hq, hkv, d = SHAPES[model]
    pages = -(-CAPACITY // PAGE)
    caches = [torch.randn(pages + 1, 2, PAGE, hkv, d, device="cuda", dtype=torch.bfloat16) for _ in range(LAYERS)]
    table = torch.arange(1, pages + 1, dtype=torch.int32, device="cuda")[None, :]
    seq_lens = torch.tensor([ctx], dtype=torch.int32, device="cuda")
    pos = torch.tensor([ctx - 1], device="cuda")
    slots = torch.tensor([PAGE + ctx - 1], device="cuda")  # block 1 onwards: token i at PAGE + i
    qkv = torch.randn(1, (hq + 2 * hkv) * d, device="cuda", dtype=torch.bfloat16)
    inv_freq = 1.0 / (500000 ** (torch.arange(0, d, 2, device="cuda").float() / d))
    cos, sin = rope_table(inv_freq, CAPACITY, 1.0, torch.bfloat16)
    out = {}
    default = pa.decode_partitions(CAPACITY, 1, hkv, PAGE, head_dim=d)
    for part, warps in variants:
        parts = -(-CAPACITY // part)
        pa.DECODE_WARPS = warps
        calls = [lambda kv=kv: pa.paged_decode_attention_rope(qkv, hq, cos, sin, pos, slots, kv, table, seq_lens,
                                                              d ** -0.5, part=part, num_parts=parts)
                 for kv in caches]
        us = time_graph(calls)
        key = f"part {part} x{pa.pow2(parts)}, {warps} warps" + (" (default)" if (part, warps) == (default[0], 4) else "")
        out[key] = round(us, 2)
        print(f"{model} ctx {ctx}: {key}: {us:.2f} us", flush=True)
    pa.DECODE_WARPS = 4
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--ctx", default="256")
    ap.add_argument("--name", default="attn_sweep_h100")
    args = ap.parse_args()
    variants = [(64, 4), (64, 8), (64, 2), (32, 4), (32, 2), (32, 8), (16, 4), (16, 2), (128, 4), (128, 8), (256, 8),
                (512, 8)]
    result = {"benchmark": "attn_sweep", "device": device_name(), "machine": machine(), "layers": LAYERS,
              "capacity": CAPACITY, "runs": {}}
    for model in args.models.split(","):
        for ctx in map(int, args.ctx.split(",")):
            result["runs"][f"{model} ctx {ctx}"] = one_shape(model, ctx, variants)
    print(f"-> {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
