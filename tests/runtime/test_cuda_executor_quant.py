"""Quantized engines on the `cuda` backend: prefill through the GEMM kernels, decode steps (few rows) through
the quantized GEMV, both against the reference backend (CPU: Triton's interpreter; tests/gpu runs it too)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # before Triton's first import: it reads the switch then
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from tests.builder.quantization.conftest import make_quant_checkpoint, one_torch_thread  # noqa: E402, F401 (autouse)
from workbench.builder.build import build  # noqa: E402
from workbench.builder.config import BuildConfig  # noqa: E402
from workbench.builder.quantization import QuantConfig  # noqa: E402
from workbench.runtime.executor import Executor  # noqa: E402
from workbench.runtime.session import GenerationConfig, GenerationSession  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
PROMPTS = [[3, 17, 42, 99, 5, 64, 7, 8, 120, 33, 2, 9], [5, 9, 101]]
MODES = {"int8_wo": {}, "int4_wo": {}, "awq": {"calib_samples": 2, "calib_seq_len": 32},
         "smoothquant": {"calib_samples": 2, "calib_seq_len": 32}, "fp8": {"calib_samples": 2, "calib_seq_len": 32}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qckpt") / "llama256"
    make_quant_checkpoint(path)
    return path


@pytest.mark.parametrize("method", list(MODES))
def test_quantized_engine_matches_reference(checkpoint, method):
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy

    engine = build(checkpoint, BuildConfig(max_seq_len=48, max_batch_size=2, kv_page_size=8,
                                           quant=QuantConfig(method=method, **MODES[method])))
    ex = CudaExecutor(engine, DEV, gemv=GemvPolicy("cublas"))  # cublas: float linears; quantized ones take the GEMV
    assert ex.program.source.count("_quant_linear(") == 8  # qkv, o_proj, gate_up, down of two layers
    ref = Executor(engine, DEV).forward(PROMPTS)
    got = ex.forward(PROMPTS)  # 15 rows: the GEMM kernels
    if method == "fp8" and DEV == "cuda":
        # Hopper's FP8 accumulation differs from fp32 in the last bits (tests/plugins/test_quant_gemm.py); the next
        # layer's e4m3 rounding turns some of those into whole steps (1/8 relative), so only closeness is checked
        for a, b in zip(got, ref):
            assert (a["logits"].argmax(-1) == b["logits"].argmax(-1)).float().mean() > 0.8
        return
    for a, b in zip(got, ref):
        err = (a["logits"].double() - b["logits"].double()).norm() / b["logits"].double().norm()
        assert err < 1e-5, method
    # decode: 1 and 2 rows through the GEMV; greedy tokens as the reference session's
    cfg = GenerationConfig(max_new_tokens=4, eos_token_ids=[])
    expected = GenerationSession(engine, device=DEV).generate(PROMPTS, cfg).token_ids
    assert GenerationSession(engine, device=DEV, executor=ex).generate(PROMPTS, cfg).token_ids == expected
    single = GenerationSession(engine, device=DEV).generate(PROMPTS[:1], cfg).token_ids
    assert GenerationSession(engine, device=DEV, executor=ex).generate(PROMPTS[:1], cfg).token_ids == single
    if method in ("int8_wo", "int4_wo", "awq"):  # the activation written by the gate_up projection's GEMV
        fused = CudaExecutor(engine, DEV, gemv=GemvPolicy("cublas", swiglu=True))
        assert fused.program.source.count("_swiglu_quant_linear(") == 2
        assert GenerationSession(engine, device=DEV, executor=fused).generate(PROMPTS[:1], cfg).token_ids == single


@pytest.mark.parametrize("method", ["int8_wo", "int4_wo"])
def test_quantized_logits_layer_on_the_fast_path(checkpoint, method):
    from workbench.builder.quantization.config import DEFAULT_TARGETS
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy

    engine = build(checkpoint, BuildConfig(max_seq_len=48, max_batch_size=2, kv_page_size=8,
                                           quant=QuantConfig(method=method, targets=DEFAULT_TARGETS + ["logits"])))
    assert engine.network.nodes["logits"].op == "quant_linear"
    ex = CudaExecutor(engine, DEV, gemv=GemvPolicy("cublas"))
    ref = Executor(engine, DEV).forward(PROMPTS)
    for a, b in zip(ex.forward(PROMPTS), ref):
        err = (a["logits"].double() - b["logits"].double()).norm() / b["logits"].double().norm()
        assert err < 1e-5
    cfg = GenerationConfig(max_new_tokens=4, eos_token_ids=[])
    expected = GenerationSession(engine, device=DEV).generate(PROMPTS[:1], cfg).token_ids
    assert GenerationSession(engine, device=DEV, executor=ex).generate(PROMPTS[:1], cfg).token_ids == expected
