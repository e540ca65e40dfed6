"""Plugin tests run on the CPU through Triton's interpreter (set before any kernel module is imported)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"shapes differ: {list(a.shape)} vs {list(e.shape)}"
    assert torch.isfinite(a).all(), "non-finite values in the kernel's output"
    return ((a - e).norm() / e.norm().clamp_min(1e-30)).item()


# fp32 runs exact-precision dots; half types round their operands (1e-3 .. 1e-2 expected)
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}



def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit for bit (the kernels round bf16 on the bits, so even Triton's interpreter, which truncates its own
    fp32 -> bf16 casts, agrees with torch)."""
    assert torch.equal(actual, expected), f"max diff {(actual.double() - expected.double()).abs().max().item()}"
