"""The decode GEMVs read x only after their PDL wait, in the order Triton's pipeliner schedules their ops:
their sm_90 TTGIR, compiled on the CPU by ttgir_order.py in a subprocess (with the interpreter off). Before the
sixth session the TMA tiles read x first; on an H100 that changed the tokens of int8 and int4 engines under PDL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_tma_gemvs_read_x_only_after_their_wait():
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ttgir_order.py"))], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    order = json.loads(proc.stdout)
    assert len(order) == 15
    for name, seen in order.items():
        assert seen["wait"] >= 0 and seen["reads"], f"{name}: no wait or no read of x found in its TTGIR"
        assert min(seen["reads"]) > seen["wait"], f"{name}: x read at TTGIR line {min(seen['reads'])}, " \
                                                  f"before the wait at line {seen['wait']}"
