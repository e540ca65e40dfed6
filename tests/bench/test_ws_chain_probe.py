"""bench/ws_chain_probe.py's warp-specialised kernel compiles for sm_90 without a GPU (its timings need an H100):
a producer with TMA copies, consumers that wait on the device-wide counters, both weight formats."""

from __future__ import annotations

from tests.compile_on_cpu import compiled_report


def test_ws_chain_kernel_compiles_for_hopper_on_the_cpu():
    code = ("import json, sys; sys.path.insert(0, 'bench'); import ws_chain_probe as p; "
            "print(json.dumps({f: (k['shared'], k['ptx'].count('cp.async.bulk.tensor'), "
            "k['ptx'].count('ld.global.gpu.acquire'), k['ptx'].count('setmaxnreg')) for f, k in p.compile_only().items()}))")
    got = compiled_report(code)
    assert set(got) == {"bf16", "int8"}
    for fmt, (shared, copies, acquires, regs) in got.items():
        assert 128 * 1024 < shared <= 227 * 1024, f"{fmt}: {shared} bytes of shared memory"
        assert copies > 0 and acquires > 0, f"{fmt}: no TMA copy or no wait on the counters in its PTX"
        assert regs > 0, f"{fmt}: not warp-specialised (no register reallocation between partitions)"
