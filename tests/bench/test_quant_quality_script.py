"""bench/quant_quality.py runs its whole code path on a tiny checkpoint (with a tokenizer) in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "quant_quality.py"


def test_quant_quality_script_on_a_tiny_model(tmp_path):
    from tests.inspect.conftest import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "tiny")  # hidden 64: one short int4 group
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(ckpt), "--out", str(out), "--window", "64",
                           "--windows", "2", "--modes",
                           "int8_wo,int8_wo (logits layer too),awq (g128),kv cache fp8 (per head)"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "quant_quality_cpu.json").read_text())
    assert [r["mode"] for r in data["rows"]] == ["fp32", "int8_wo", "int8_wo (logits layer too)", "awq (g128)",
                                                 "kv cache fp8 (per head)"]
    with_logits = data["rows"][2]
    assert with_logits["weight_mib"] != data["rows"][1]["weight_mib"]  # the logits layer stored in int8 too
    assert data["eval_tokens"] == 126 and data["rows"][0]["top1_agreement"] == 1.0
    assert all(r["perplexity"] > 1 for r in data["rows"])
    assert "| int8_wo |" in (out / "quant_quality_cpu.md").read_text()
