"""Shared bits of the benchmarks: machine description and atomic JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "load_average_at_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def median(xs: list[float]) -> float:
    """Median of a list."""
    return statistics.median(xs)


def write_result(name: str, data: dict) -> Path:
    """Write bench/results/<name>.json atomically, and a copy to $OUT when set (the device tool brings it back)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"{name}.json").write_text(json.dumps(data, indent=2))
    return path
