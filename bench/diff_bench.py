"""`wb diff` of every layer of SmolLM2-135M on a 32-token prompt, as a library call, with the build cached.

Each repeat runs in a fresh process (as `wb diff` does): resolve the cached engine, load the
tokenizer and the HF model, run both sides, judge every name. Imports are timed apart.
The target is <= 20 s on 2 CPU cores.

Usage: python bench/diff_bench.py [--repeats 3] [--mode accumulated|local|both] [--dtype fp32] [--threads 0,1]
Writes bench/results/diff_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median, write_result  # noqa: E402

TARGET_S = 20.0

# One timed call, in a child process; prints a JSON line.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from workbench.cli.common import resolve_engine
from workbench.inspect.diff import DEFAULT_PROMPT, diff
t1 = time.perf_counter()
mode, dtype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
modes = ("accumulated", "local") if mode == "both" else (mode,)
engine = resolve_engine(None, dtype)
t2 = time.perf_counter()
reports = diff(engine, "all", modes=modes)
t3 = time.perf_counter()
r = reports[0]
print(json.dumps({"import_s": t1 - t0, "resolve_engine_s": t2 - t1, "diff_s": t3 - t2, "call_s": t3 - t1,
                  "rows": len(r.rows), "prompt_tokens": len(r.token_ids), "passed": [x.passed for x in reports],
                  "threads": torch.get_num_threads()}))
"""


def run_once(mode: str, dtype: str, threads: int) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, dtype, str(threads)], capture_output=True, text=True,
                          env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def _cpu_pressure() -> str | None:
    """Linux PSI: the share of time tasks waited for a CPU (other processes competing for the cores)."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def _series(mode: str, dtype: str, threads: int, repeats: int) -> dict:
    runs = []
    for i in range(repeats):
        r = run_once(mode, dtype, threads)
        runs.append(r)
        print(f"threads {r['threads']}, run {i + 1}: library call {r['call_s']:.2f} s (resolve engine "
              f"{r['resolve_engine_s']:.2f} s, diff {r['diff_s']:.2f} s), imports {r['import_s']:.2f} s, "
              f"process {r['process_wall_s']:.2f} s", flush=True)
    return {
        "threads": runs[0]["threads"],
        "median_call_s": round(median([r["call_s"] for r in runs]), 3),
        "median_diff_s": round(median([r["diff_s"] for r in runs]), 3),
        "median_import_s": round(median([r["import_s"] for r in runs]), 3),
        "median_process_wall_s": round(median([r["process_wall_s"] for r in runs]), 3),
        "cpu_pressure_after": _cpu_pressure(),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mode", default="accumulated", choices=("accumulated", "local", "both"))
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", default="0,1",
                    help="torch thread counts to time, comma-separated (0: torch's default, one per core). On a "
                         "machine other processes load, 2 threads on 2 cores wait in OpenMP barriers and run "
                         "several times slower than 1; the recorded CPU pressure says how loaded it was.")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    pressure_at_start = _cpu_pressure()
    print("warm-up (builds and caches the engine and its debug engine if needed)...", flush=True)
    first = run_once(args.mode, args.dtype, threads[0])
    series = [_series(args.mode, args.dtype, t, args.repeats) for t in threads]
    call = series[0]["median_call_s"]
    data = {
        "benchmark": "diff_cpu",
        "what": "workbench.inspect.diff.diff(engine, 'all') on SmolLM2-135M-Instruct, default 32-token prompt, "
                "engine and debug engine cached; fresh process per repeat; median_call_s is the first thread setting",
        "model": "SmolLM2-135M-Instruct", "dtype": args.dtype, "mode": args.mode,
        "rows": first["rows"], "prompt_tokens": first["prompt_tokens"], "repeats": args.repeats,
        "median_call_s": call, "target_s": TARGET_S, "meets_target": call <= TARGET_S,
        "series": series, "machine": {**machine(), "cpu_pressure_at_start": pressure_at_start},
    }
    path = write_result("diff_cpu", data)
    for s in series:
        print(f"threads {s['threads']}: median library call {s['median_call_s']:.2f} s")
    print(f"target <= {TARGET_S:g} s -> {path}")


if __name__ == "__main__":
    main()
