"""Fixtures for the quantization tests: a tiny Llama whose widths are multiples of the int4 group size."""

from __future__ import annotations

import pytest
import torch

from workbench.runtime import calibration  # noqa: F401  (the quantization passes calibrate through it)

# hidden 256 (two int4 groups of 128), intermediate 512, 4 heads of 64 (2 KV heads), 2 layers, vocab 128.
# A moderate init keeps the random decoder from amplifying small errors chaotically, and a
# 10x LM head spreads the logits so that top-1 agreement measures the error, not near-ties.
QUANT_TINY = dict(vocab_size=128, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, initializer_range=0.05)
SEQUENCES = [[(7 * i + 3 * j) % 128 for j in range(24 + 8 * i)] for i in range(3)]


def make_quant_checkpoint(path, seed: int = 0):
    """Save the tiny Llama above as an HF checkpoint dir; returns the HF model."""
    from transformers import LlamaConfig

    from workbench.inspect.tiny_models import random_model

    config = LlamaConfig(**QUANT_TINY)
    config.architectures = ["LlamaForCausalLM"]
    model = random_model(config, seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.save_pretrained(path)
    return model


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny layers make every op small: on a shared CPU, intra-op threads only add synchronisation."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def quant_checkpoint(tmp_path_factory):
    """(checkpoint dir, HF model) of the tiny Llama with hidden size 256."""
    path = tmp_path_factory.mktemp("qckpt") / "llama256"
    return path, make_quant_checkpoint(path)


@pytest.fixture(scope="session")
def fp_engine(quant_checkpoint):
    """The unquantized fp32 engine of the tiny checkpoint (in memory)."""
    from workbench.builder.build import build

    return build(quant_checkpoint[0])


@pytest.fixture(scope="session")
def fp_logits(fp_engine):
    """fp32 logits of SEQUENCES, concatenated [T, V]."""
    return run_logits(fp_engine, SEQUENCES)


def run_logits(engine, sequences) -> torch.Tensor:
    """Logits of every token of every sequence, concatenated [T, V]."""
    from workbench.runtime.executor import Executor

    return torch.cat([o["logits"] for o in Executor(engine).forward(sequences)])


@pytest.fixture(scope="session")
def quantized(quant_checkpoint):
    """A factory: QuantConfig kwargs -> built engine (in memory), each built once per session."""
    from workbench.builder.build import build
    from workbench.builder.config import BuildConfig
    from workbench.builder.quantization import QuantConfig

    made = {}

    def get(**kw):
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items()))
        if key not in made:
            made[key] = build(quant_checkpoint[0], BuildConfig(quant=QuantConfig(**kw)))
        return made[key]

    return get
