"""bench/profile_gpu.py runs its whole code path on a tiny model on the CPU (the GPU run is the same path, bigger)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from workbench.inspect.profiler import ProfileReport

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "profile_gpu.py"


def test_profile_gpu_script_tiny_on_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out), "--work",
                           str(tmp_path / "work"), "--repeats", "2", "--warmup", "1", "--steps", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = ProfileReport.load(out / "profile_gpu_report.json")
    assert set(report.phases) == {"context", "generation"}
    assert report.phases["context"].baseline is not None  # the HF baseline ran beside the engine
    assert json.loads((out / "profile_gpu_trace.json").read_text())["traceEvents"]
    summary = (out / "profile_gpu_summary.txt").read_text()
    assert "top layers" in summary and "generation" in summary
