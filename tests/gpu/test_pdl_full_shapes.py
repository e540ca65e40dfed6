"""Programmatic dependent launch changes no token at the layer shapes of Llama-3.2-1B and Llama-3-8B, where the
built-in GEMV table picks its TMA tiles (test_cuda_backend.py's engines are too small to reach them): two random
layers a model, bf16, int8 and int4 weight-only, decode graphs captured with and without PDL."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():  # before importing Triton (see workbench/plugins/common.py)
    pytest.skip("needs a CUDA device", allow_module_level=True)

pytestmark = pytest.mark.gpu
DEV = "cuda"
DIMS = {"1b": dict(hidden_size=2048, num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192,
                   head_dim=64),
        "8b": dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                   head_dim=128)}


def _engine(dims: str, method: str | None):
    """Two random layers of the shape (HF's init: std 0.02, norms 1), as an in-memory engine, quantized by method."""
    from dataclasses import replace

    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM as HFLlama

    from workbench.builder.build import run_passes
    from workbench.builder.config import BuildConfig
    from workbench.builder.engine import Engine
    from workbench.builder.models.llama import LlamaConfig, LlamaForCausalLM, hf_state_to_engine
    from workbench.builder.quantization import QuantConfig, apply_quantization

    torch.manual_seed(0)
    hf = HFLlama(HFConfig(**DIMS[dims], num_hidden_layers=2, vocab_size=32000, rms_norm_eps=1e-5,
                          tie_word_embeddings=False)).eval()
    cfg = LlamaConfig.from_hf(hf.config.to_dict())
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.load_state_dict(hf_state_to_engine(cfg, dict(hf.state_dict()), "random weights"))
    bc = BuildConfig(dtype="bfloat16", max_batch_size=1, max_seq_len=96, kv_page_size=16)
    net = run_passes(model.to_network("bfloat16"), bc)
    if method is not None:
        qc = QuantConfig(method=method)
        net = apply_quantization(net, qc)
        bc = replace(bc, quant=qc)
    return Engine(network=net, architecture=cfg.architecture, model_config=cfg.to_dict(), build_config=bc,
                  source={"checkpoint": "random weights"})


@pytest.mark.parametrize("dims", ["1b", "8b"])
@pytest.mark.parametrize("method", [None, "int8_wo", "int4_wo"])
def test_pdl_changes_no_token_at_full_layer_shapes(dims, method):
    from workbench.plugins import common
    from workbench.runtime.cuda_executor import CudaExecutor
    from workbench.runtime.kv_cache import PagedKVCache

    if torch.cuda.get_device_capability()[0] < 9 or not common.use_pdl():
        pytest.skip("programmatic dependent launch needs Hopper or later")
    engine = _engine(dims, method)
    cfg = engine.model_config
    cache = PagedKVCache.for_budget(cfg["num_layers"], cfg["num_kv_heads"], cfg["head_dim"],
                                    max_tokens=128, page_size=16, dtype=torch.bfloat16, device=DEV)
    prompt = torch.randint(0, 32000, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    tokens = {}
    for pdl in (True, False):
        ex = CudaExecutor(engine, DEV, pdl=pdl)
        tokens[pdl] = ex.generate_greedy(cache, [prompt], 48).tokens
        assert ex.graph_report()[1]["pdl"] is pdl
        ex.release_graphs()
    assert torch.equal(tokens[True], tokens[False])
