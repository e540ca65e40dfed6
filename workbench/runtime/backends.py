"""Executors by backend name, and where each backend can run (one-line errors where it cannot).

`torch` (the reference) runs anywhere. `cuda` (the fast path: compiled program, Triton plugins,
CUDA-graph decode steps) runs on a CUDA device, or on the CPU through Triton's interpreter when
TRITON_INTERPRET=1 was set before anything imported Triton (slow: for tests and small models).
"""

from __future__ import annotations

import os

import torch

from workbench.builder.engine import Engine
from workbench.errors import WorkbenchError
from workbench.runtime.executor import Executor

BACKEND_NAMES = ("torch", "cuda")


def interpreting() -> bool:
    """True when Triton's CPU interpreter was switched on (TRITON_INTERPRET=1 in the environment)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_device(backend: str, device: str | torch.device | None = None) -> str:
    """The device `backend` runs on (default: cuda for the cuda backend, else cpu); WorkbenchError where it cannot."""
    if backend not in BACKEND_NAMES:
        raise WorkbenchError(f"--backend {backend}: unknown backend; choose one of {', '.join(BACKEND_NAMES)}")
    device = str(device) if device is not None else ("cuda" if backend == "cuda" else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        if backend == "cuda":
            raise WorkbenchError("--backend cuda: this machine has no CUDA GPU; use --backend torch, or run the Triton "
                                 "kernels in the CPU interpreter (slow) with TRITON_INTERPRET=1 and --device cpu")
        raise WorkbenchError(f"--device {device}: this machine has no CUDA GPU; use --backend torch --device cpu")
    if backend == "cuda" and not device.startswith("cuda") and not interpreting():
        raise WorkbenchError(f"--backend cuda --device {device}: the Triton kernels run on the CPU only in Triton's "
                             "interpreter; set TRITON_INTERPRET=1 in the environment (slow: small models only)")
    return device


def make_executor(engine: Engine, device: str | torch.device | None = None, backend: str = "torch") -> Executor:
    """An executor of `engine` on `backend` (`torch`: Executor, `cuda`: CudaExecutor), checked by resolve_device."""
    device = resolve_device(backend, device)
    if backend == "cuda":
        from workbench.runtime.cuda_executor import CudaExecutor

        return CudaExecutor(engine, device)
    return Executor(engine, device)
