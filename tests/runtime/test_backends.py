"""Choosing a backend's executor and device: where each backend runs, one-line errors where it cannot."""

from __future__ import annotations

import os

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.runtime.backends import make_executor, resolve_device
from workbench.runtime.executor import Executor

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_torch_runs_on_the_cpu_by_default():
    assert resolve_device("torch") == "cpu"
    assert resolve_device("torch", "cpu") == "cpu"


@no_cuda
def test_cuda_backend_without_a_gpu_says_what_to_do(monkeypatch):
    with pytest.raises(WorkbenchError, match="no CUDA GPU.*TRITON_INTERPRET=1 and --device cpu"):
        resolve_device("cuda")
    with pytest.raises(WorkbenchError, match="--device cuda: this machine has no CUDA GPU"):
        resolve_device("torch", "cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_device("cuda", "cpu") == "cpu"  # the interpreter, asked for by name
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(WorkbenchError, match="set TRITON_INTERPRET=1"):
        resolve_device("cuda", "cpu")


def test_unknown_backend_is_refused():
    with pytest.raises(WorkbenchError, match="unknown backend.*torch, cuda"):
        resolve_device("tensorrt")


def test_make_executor_gives_each_backend_its_executor(tiny_engine_dir):
    from workbench.builder.engine import load_engine

    engine = load_engine(tiny_engine_dir)
    ex = make_executor(engine, "cpu", "torch")
    assert type(ex) is Executor and ex.backend == "torch"
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        from workbench.runtime.cuda_executor import CudaExecutor

        fast = make_executor(engine, "cuda" if torch.cuda.is_available() else "cpu", "cuda")
        assert isinstance(fast, CudaExecutor) and fast.backend == "cuda"
