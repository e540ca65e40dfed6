"""How much of a captured decode step each kind of kernel costs where it sits: the step timed as built, then with
one kind of kernel taken out of the CUDA graph (the tokens come out wrong; only the time is kept).

    python bench/decode_ablate.py                              # 8B and 1B; bf16 and int8 + logits; batch 1
    python bench/decode_ablate.py --models llama-3.2-1b --cuts norm,attn

bench/decode_kernels.py times each kernel launched on its own; under PDL in a graph a kernel partly overlaps
its neighbours, so what it costs the step is what taking it out saves. Cuts:

- `norm`: the add + RMSNorm kernels (the sum and the norm come back as the inputs, unnormalised);
- `attn`: the decode attention kernel and its partition merge (the output is left unwritten);
- `merge`: only the partition merge;
- `onepart`: not a cut, the attention in one partition a sequence (no merge kernel, fewer programs).

Random-weight Llama shapes (bench/gpu_models.py), prompt 128, 256 new tokens, the built-in GEMV table.
Writes bench/results/decode_ablate_h100.json (and $OUT/ when set).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from decode_quant import MODES, quantized  # noqa: E402
from gpu_models import decode_setup, device_name  # noqa: E402

CUTS = ("none", "norm", "attn", "merge", "onepart")


class _NoLaunch:
    """Stands for a Triton kernel: `kernel[grid](...)` launches nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@contextmanager
def cut(kind: str):
    """The plugins with one kind of kernel taken out (patched module attributes, restored after)."""
    from workbench.plugins import paged_attention as pa
    from workbench.plugins import rms_norm as rn
    from workbench.runtime import cuda_ops

    saved = []

    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    if kind == "norm":
        patch(rn, "add_rms_norm", lambda x, r, w, eps: (r, x))
        patch(rn, "rms_norm", lambda x, w, eps: x)
    elif kind == "attn":
        patch(cuda_ops, "rope_attention",
              lambda ctx, node, qkv, pos, hq, hkv, d, layer, table, *_: qkv.new_empty(qkv.shape[0], hq, d))
    elif kind == "merge":
        patch(pa, "_paged_reduce", _NoLaunch())
    elif kind == "onepart":
        patch(pa, "MIN_PARTITION", 1 << 16)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def run_model(name: str, args, out: dict) -> None:
    from workbench.runtime.cuda_executor import CudaExecutor

    base, cache, prompt, _ = decode_setup(name, args.prompt, args.new_tokens)
    for mode in args.modes.split(","):
        engine = base if MODES[mode] is None else quantized(base, *MODES[mode])
        row = out.setdefault(mode, {})
        for kind in args.cuts.split(","):
            with cut(kind):  # the executor binds the plugins when it compiles, the graph when it captures
                ex = CudaExecutor(engine, "cuda")
                ex.generate_greedy(cache, [prompt], 8)
                runs = [ex.generate_greedy(cache, [prompt], args.new_tokens) for _ in range(args.repeats)]
            step = sorted(r.decode_ms for r in runs)[len(runs) // 2] / (args.new_tokens - 1)
            row[kind] = {"step_ms": round(step, 4)}
            if kind != "none" and "none" in row:
                row[kind]["saved_us"] = round((row["none"]["step_ms"] - step) * 1e3, 1)
            print(f"[{name}] {mode} {kind}: step {step:.4f} ms"
                  + (f", saves {row[kind]['saved_us']} us" if "saved_us" in row[kind] else ""), flush=True)
            ex.release_graphs()
            del ex
        if engine is not base:
            del engine
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-3-8b,llama-3.2-1b")
    ap.add_argument("--modes", default="bf16,int8_wo_logits")
    ap.add_argument("--cuts", default=",".join(CUTS))
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="decode_ablate_h100")
    args = ap.parse_args()
    bad = [c for c in args.cuts.split(",") if c not in CUTS]
    if bad:
        ap.error(f"--cuts: unknown {', '.join(bad)}; choose from {', '.join(CUTS)}")
    result = {"benchmark": "decode_ablate", "device": device_name(), "machine": machine(), "prompt_tokens": args.prompt,
              "new_tokens": args.new_tokens, "models": {}}
    start = time.perf_counter()
    for name in args.models.split(","):
        run_model(name, args, result["models"].setdefault(name, {}))
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"-> {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
