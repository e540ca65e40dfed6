"""What NVTX node ranges cost when enabled but no profiler is attached, on the CPU.

Runs the same context step and decode step of an engine (default: the default model,
SmolLM2-135M, fp32) with the executor's node hook off, with `NvtxRanges("noop")` (the
hook's own Python cost: layer bookkeeping and two calls per range that do nothing), and
with `NvtxRanges("nvtx")` when the `nvtx` package is importable (real NVTX calls; with no
profiler attached they return at once). Variants are interleaved per repeat; medians.
A micro-benchmark of one push/pop pair per backend gives the per-range cost without the
step's noise.

    python bench/nvtx_overhead_cpu.py [ENGINE_OR_CHECKPOINT] [--out bench/results/nvtx_overhead_cpu.json]

On a CPU-only machine torch.cuda.nvtx is not usable, so "torch" is not measured here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.cli.common import resolve_engine  # noqa: E402
from workbench.inspect.profiler import write_text_atomic  # noqa: E402
from workbench.runtime.attention_meta import AttentionMeta  # noqa: E402
from workbench.runtime.executor import Executor  # noqa: E402
from workbench.runtime.kv_cache import PagedKVCache  # noqa: E402
from workbench.runtime.nvtx import NvtxRanges, resolve_backend  # noqa: E402


def _pair_cost_ns(backend: str, n: int = 200_000) -> float | None:
    """ns per push+pop of one range name (best of 5)."""
    name, push, pop = resolve_backend(backend)
    if name != backend:
        return None

    def once():
        push("layers.3.attn.core")
        pop()

    return min(timeit.repeat(once, number=n, repeat=5)) / n * 1e9


def _hook_cost_ns(backend: str, names: list[str], n: int = 200) -> float | None:
    """ns the node hook adds per node (ranges for the node and its layer) over calling the node directly."""
    ranges = NvtxRanges(backend)
    if ranges.backend != backend:
        return None
    thunk = lambda: None  # noqa: E731

    def hooked():
        for name in names:
            ranges(name, thunk)
        ranges.close_layer()

    def bare():
        for _ in names:
            thunk()

    best = lambda f: min(timeit.repeat(f, number=n, repeat=5)) / n  # noqa: E731
    return (best(hooked) - best(bare)) / len(names) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "nvtx_overhead_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = resolve_engine(args.model, "fp32")
    ex = Executor(engine, "cpu")
    atts = [n.attrs for n in engine.network.nodes.values() if n.op == "attention"]
    layers, kvh, hd = len(atts), atts[0]["num_kv_heads"], atts[0]["head_dim"]
    p = args.prompt_len
    cache = PagedKVCache(layers, kvh, hd, num_blocks=-(-(p + 1) // 16), page_size=16)
    cache.reserve(0, p + 1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(engine.model_config["vocab_size"]), (p + 1,), generator=g)
    steps = {
        "context": (ids[:p], torch.arange(p), AttentionMeta([0], [p], [0], cache)),
        "generation": (ids[p:], torch.tensor([p]), AttentionMeta([0], [1], [p], cache)),
    }
    variants = {"off": None, "noop": NvtxRanges("noop")}
    if NvtxRanges("nvtx").backend == "nvtx":
        variants["nvtx"] = NvtxRanges("nvtx")
    nodes = len(ex.steps)
    num_layers = len({n.split(".")[1] for n in (s.name for s in ex.steps) if n.startswith("layers.")})
    results = {}
    gc.collect()
    gc.disable()
    with torch.inference_mode():
        for phase, (i, pos, meta) in steps.items():
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(3):
                ex.run(i, pos, meta)
            for _ in range(args.repeats):
                for v, ranges in variants.items():
                    t0 = time.perf_counter()
                    if ranges is None:
                        ex.run(i, pos, meta)
                    else:
                        with ranges.step(ex, phase, 0):
                            ex.run(i, pos, meta)
                    times[v].append((time.perf_counter() - t0) * 1e3)
            base = statistics.median(times["off"])
            results[phase] = {v: {"median_ms": statistics.median(t), "min_ms": min(t),
                                  "overhead_ms": statistics.median(t) - base,
                                  "overhead_pct": 100 * (statistics.median(t) - base) / base,
                                  "overhead_min_ms": min(t) - min(times["off"])} for v, t in times.items()}
    gc.enable()
    pair = {b: _pair_cost_ns(b) for b in ("noop", "nvtx")}
    per_node = {b: _hook_cost_ns(b, [s.name for s in ex.steps]) for b in ("noop", "nvtx")}
    ranges_per_step = nodes + num_layers + 2  # each node, each layer, phase and step
    record = {
        "what": "executor step time with NVTX ranges per node/layer/step/phase, no profiler attached, CPU",
        "command": "python bench/nvtx_overhead_cpu.py" + (f" {args.model}" if args.model else ""),
        "model": str(engine.path), "dtype": engine.build_config.dtype, "prompt_len": p,
        "repeats": args.repeats, "threads": args.threads, "nodes_per_step": nodes, "ranges_per_step": ranges_per_step,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_1min_at_end": os.getloadavg()[0], "python": platform.python_version(),
                    "torch": torch.__version__, "cuda_available": torch.cuda.is_available()},
        "nvtx_package": _nvtx_version(),
        "steps": results,
        "push_pop_pair_ns": pair,
        "hook_per_node_ns": per_node,
        "estimated_overhead_ms_per_step": {b: None if c is None else c * nodes / 1e6 for b, c in per_node.items()},
        "notes": ("'off' is the executor with node_hook None: the default, no NVTX code runs. 'noop' is the hook "
                  "with a backend that does nothing: the Python cost of the hook itself. 'nvtx' uses the nvtx "
                  "package's domain API with cached attributes; without a profiler attached each call returns "
                  "early, so this is the cost a user pays for leaving ranges on outside nsys. hook_per_node_ns: "
                  "the hook's cost per node (node range, layer bookkeeping and layer ranges) over a direct call, "
                  "from a micro-benchmark; estimated_overhead_ms_per_step = that times the nodes per step. On a GPU the "
                  "torch.cuda.nvtx fallback was not measured here (no CUDA on this machine). Step-time "
                  "differences are noisy on a shared CPU; the push/pop micro-benchmark is the steadier number."),
    }
    write_text_atomic(args.out, json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


def _nvtx_version() -> str | None:
    try:
        import nvtx
    except ImportError:
        return None
    from importlib.metadata import version

    try:
        return version("nvtx")
    except Exception:  # noqa: BLE001 - installed without metadata (e.g. pip --target)
        return getattr(nvtx, "__version__", "unknown")


if __name__ == "__main__":
    main()
