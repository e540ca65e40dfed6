"""Kernels of the decode step on their own, for Nsight Compute to profile (bench/run_gpu.sh stage ncu):
the 8B o_proj GEMV in bf16 and int8, the 8B int8 gate_up GEMV writing the activation, and the decode
attention kernel (8B, 256 tokens), each launched a few times with the built-in configs."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from workbench.plugins import paged_attention as pa
    from workbench.plugins.gemv import gemv, w8a16_gemv
    from workbench.plugins.rotary import rope_table
    from workbench.runtime.gemv_policy import H100_GEMV

    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    q8 = torch.randint(-127, 128, (4096, 4096), device="cuda", dtype=torch.int8)
    gu8 = torch.randint(-127, 128, (28672, 4096), device="cuda", dtype=torch.int8)
    s = torch.rand(4096, device="cuda") * 1e-3
    sgu = torch.rand(28672, device="cuda") * 1e-3
    hq, hkv, d, page, ctx = 32, 8, 128, 16, 256
    kv = torch.randn(26, 2, page, hkv, d, device="cuda", dtype=torch.bfloat16)
    table = torch.arange(1, 26, dtype=torch.int32, device="cuda")[None, :]
    qkv = torch.randn(1, (hq + 2 * hkv) * d, device="cuda", dtype=torch.bfloat16)
    inv_freq = 1.0 / (500000 ** (torch.arange(0, d, 2, device="cuda").float() / d))
    cos, sin = rope_table(inv_freq, 400, 1.0, torch.bfloat16)
    for _ in range(3):
        gemv(x, w, None, H100_GEMV[(1, 4096, 4096)])
        w8a16_gemv(x, q8, s, None, H100_GEMV[(1, 4096, 4096, "w8a16")])
        w8a16_gemv(x, gu8, sgu, None, H100_GEMV[(1, 28672, 4096, "w8a16", "swiglu")], swiglu=True)
        pa.paged_decode_attention_rope(qkv, hq, cos, sin, torch.tensor([ctx - 1], device="cuda"),
                                       torch.tensor([page + ctx - 1], device="cuda"), kv, table,
                                       torch.tensor([ctx], dtype=torch.int32, device="cuda"), d ** -0.5)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
