"""GemvPolicy: the GEMV config of each decode-step linear, from its table (built in or from bench/gemv_sweep.py)."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.runtime.gemv_policy import H100_GEMV, GemvPolicy


def test_policy_table_from_the_sweep():
    sweep = [{"format": "w8a16", "rows": 1, "n": 768, "k": 256, "config": [64, 64, 2, 4, 2, False]},
             {"format": "w8a16", "rows": 1, "n": 1024, "k": 256, "config": [16, 64, 1, 4, 2, False], "swiglu": True},
             {"format": "bf16", "rows": 8, "n": 768, "k": 256, "config": [32, 128, 1, 4, 3]}]
    policy = GemvPolicy(table=GemvPolicy.table_from_sweep(sweep))
    assert policy.quant_config("w8a16", 1, 768, 256) == (64, 64, 2, 4, 2, False)
    assert policy.quant_config("w8a16", 4, 768, 256)[:2] == (32, 256)  # not in the table: the default
    assert policy.quant_config("w4a16", 9, 768, 256) is None  # more rows than a decode step: the GEMM
    assert policy.config(5, 768, 256) == (32, 128, 1, 4, 3) and policy.config(1, 768, 256) is None  # cuBLAS
    assert policy.swiglu_config(1, 1024, 256, "w8a16") == (16, 64, 1, 4, 2, False)  # measured faster fused
    assert policy.swiglu_config(1, 768, 256, "w8a16") is None
    assert GemvPolicy.parse("table-noswiglu", policy.table).swiglu_config(1, 1024, 256, "w8a16") is None
    assert GemvPolicy.parse("table-swiglu").swiglu_config(1, 768, 256, "w8a16")[:2] == (32, 256)


def test_modes_and_bad_specs():
    assert GemvPolicy("cublas").config(1, 28672, 4096) is None  # float weights: cuBLAS
    assert GemvPolicy().config(1, 28672, 4096) == H100_GEMV[(1, 28672, 4096)]
    assert GemvPolicy("triton").config(1, 100, 64)[:2] == (32, 256)  # not in the table: the default GEMV
    assert GemvPolicy("cublas").config(1, 4096, 4096, "w8a16") is not None  # quantized layers have no cuBLAS
    assert GemvPolicy().config(9, 28672, 4096) is None  # more rows than a decode step
    with pytest.raises(WorkbenchError, match="cublas, triton or table"):
        GemvPolicy("fast")
    with pytest.raises(WorkbenchError, match="suffix"):
        GemvPolicy.parse("table-gated")
