"""bench/block_trace.py's reading of the stamps (the stamps themselves need an H100): kernels paired layer by layer in
the order they ran, times from the block before's end, programs that stamped nothing left out."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import block_trace  # noqa: E402


def _layer(start_ns: int):
    """One layer's attention (128 programs) and block (132 programs), each event 1 us after the one before."""
    attn = torch.zeros(128, 4, dtype=torch.int64)
    attn[:, :3] = start_ns + torch.arange(3) * 1000
    block = torch.zeros(132, 16, dtype=torch.int64)
    block[:, :14] = start_ns + 3000 + torch.arange(14) * 1000
    block[0, 9] = 0  # a program whose producer stamped nothing
    return attn, block


def test_layers_lined_up_in_the_order_they_ran():
    layers = [_layer(10_000_000 + k * 100_000) for k in (2, 0, 3, 1)]  # kept in no particular order
    rows = block_trace.layer_rows([b for _, b in layers], [a for a, _ in layers])
    assert len(rows) == 3
    s = block_trace.summary(rows)
    end = 3 + 8  # the block before's end, in us from its layer's start
    assert s["attn_start"] == [100 - end] * 3  # the next layer starts 100 us after this one
    assert s["start"] == [100 + 3 - end] * 3 and s["end"] == [100 + 3 + 8 - end] * 3
    assert s["prod_start"] == [100 + 3 + 9 - end] * 3  # the unstamped program is left out, not read as time 0


def test_main_refuses_plugins_imported_before_the_switch(monkeypatch):
    import pytest

    monkeypatch.setitem(sys.modules, "workbench.plugins.decode_block", object())
    with pytest.raises(SystemExit, match="WB_PROBE_TRACE"):
        block_trace.main()
