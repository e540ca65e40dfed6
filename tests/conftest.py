"""Shared fixtures: tiny HF checkpoints saved as real directories, HF capture by forward hooks, metrics.

No model is downloaded: every checkpoint is an HF config class with seeded random weights,
written with `save_pretrained` and read back through the engine's real loading code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without CUDA the Triton plugins run in Triton's CPU interpreter, which must be chosen before
# anything imports triton (transformers may); set it here, first, for the whole test session.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import transformers  # noqa: E402

from workbench.builder.models.base import HFCapture
from workbench.inspect.tiny_models import random_model

# Several prompt lengths in one batch: long enough that a sliding window of 4 matters, and a 1-token prompt.
PROMPTS = [
    [1, 17, 42, 99, 3, 64, 7, 120, 55, 31, 8, 2, 77],
    [5, 9, 101, 33, 12],
    [127],
    [0, 44, 90, 23, 61, 18, 70, 4],
]

# hidden 64, 4 heads of 16, 2 layers, vocab 128. A larger init than HF's 0.02 keeps attention
# scores and rotary phases far from trivial, so a wrong mask or frequency shows in the logits.
TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, initializer_range=0.2)

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8, "rope_theta": 10000.0}

# name -> (HF config class, model class, config overrides, save_pretrained kwargs)
CHECKPOINTS = {
    "llama_gqa": ("LlamaConfig", "LlamaForCausalLM", {}, {}),
    "llama_mqa": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 1}, {}),
    "llama_tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}, {}),
    "llama3_rope": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": LLAMA3_ROPE}, {}),
    "llama_linear_rope": ("LlamaConfig", "LlamaForCausalLM",
                          {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}}, {}),
    "llama_sharded": ("LlamaConfig", "LlamaForCausalLM", {}, {"max_shard_size": "40KB"}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4096}, {}),
    "mistral_window": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4}, {}),
    "qwen2_bias": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}, {}),
}


def make_checkpoint(path: Path, name: str, seed: int = 0, **overrides):
    """Save the tiny model `name` of CHECKPOINTS as an HF checkpoint dir at `path`; returns the HF model (fp32, eval)."""
    config_cls, model_cls, cfg_over, save_kwargs = CHECKPOINTS[name]
    config = getattr(transformers, config_cls)(**{**TINY, **cfg_over, **overrides})
    config.architectures = [model_cls]
    model = random_model(config, seed)
    model.save_pretrained(path, **save_kwargs)
    model.set_attn_implementation("eager")  # the plain reference, same op order as the engine's torch backend
    return model


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """A factory: name -> (checkpoint dir, HF model), each made once per session. Treat both as read-only."""
    made: dict[str, tuple[Path, torch.nn.Module]] = {}

    def get(name: str):
        if name not in made:
            path = tmp_path_factory.mktemp("ckpt") / name
            made[name] = (path, make_checkpoint(path, name))
        return made[name]

    return get


@pytest.fixture(scope="session")
def tiny_checkpoint(hf_checkpoint) -> Path:
    """The default tiny Llama (GQA) checkpoint directory."""
    return hf_checkpoint("llama_gqa")[0]


@pytest.fixture(scope="session")
def tiny_engine_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """A saved fp32 engine built from the tiny Llama. Copy it before editing it."""
    from workbench.builder.build import build_engine

    out = tmp_path_factory.mktemp("engine") / "tiny"
    build_engine(tiny_checkpoint, out)
    return out


@pytest.fixture(scope="session")
def batch_engines(hf_checkpoint, tmp_path_factory):
    """A factory: (checkpoint name, dtype) -> a saved engine for 4 sequences of up to 64 tokens in KV pages of 4."""
    from workbench.builder.build import build_engine
    from workbench.builder.config import BuildConfig

    made = {}

    def get(name: str, dtype: str = "float32"):
        if (name, dtype) not in made:
            ckpt, _ = hf_checkpoint(name)
            out = tmp_path_factory.mktemp("eng") / f"{name}-{dtype}"
            made[name, dtype] = build_engine(ckpt, out, BuildConfig(dtype=dtype, max_seq_len=64, max_batch_size=4,
                                                                    kv_page_size=4))
        return made[name, dtype]

    return get


@pytest.fixture
def prompts() -> list[list[int]]:
    """A batch of token sequences of several lengths."""
    return [list(p) for p in PROMPTS]


def rel_max_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"shapes differ: {list(a.shape)} vs {list(e.shape)}"
    return ((a - e).abs().max() / e.abs().max()).item()


@torch.inference_mode()
def hf_logits(model, sequences: list[list[int]]) -> list[torch.Tensor]:
    """HF logits [S, V] of each sequence, run alone."""
    return [model(torch.tensor([s])).logits[0] for s in sequences]


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


@torch.inference_mode()
def hf_capture(model, ids: list[int], name_map: dict[str, HFCapture]) -> dict[str, torch.Tensor]:
    """Run one sequence through the HF model and read every mapped tensor with forward hooks: name -> [S, ...]."""
    modules = dict(model.named_modules())
    seen: dict[tuple[str, str], torch.Tensor] = {}
    handles = []

    def hook(mod_name: str, how: str):
        def fn(module, args, output):
            value = _first(args) if how == "input" else _first(output)
            seen[(mod_name, how)] = value.detach()[0]  # drop the batch dim: [1, S, ...] -> [S, ...]

        return fn

    try:
        for cap in name_map.values():
            how = "input" if cap.how == "input" else "output"
            for m in cap.modules:
                if m not in modules:
                    raise KeyError(f"HF model has no module {m!r}")
                if (m, how) not in seen:
                    seen[(m, how)] = None
                    handles.append(modules[m].register_forward_hook(hook(m, how)))
        model(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, cap in name_map.items():
        how = "input" if cap.how == "input" else "output"
        parts = [seen[(m, how)] for m in cap.modules]
        out[name] = torch.cat(parts, dim=-1) if cap.how == "concat_outputs" else parts[0]
    return out


@pytest.fixture(scope="session")
def smollm2_checkpoint() -> Path:
    """The real default model (SmolLM2-135M-Instruct) as an HF checkpoint, converted once into the cache."""
    from workbench.default_model import default_checkpoint

    return default_checkpoint()


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_checkpoint, tmp_path_factory):
    """An fp32 engine of the default model, built once per test session."""
    from workbench.builder.build import build_engine
    from workbench.builder.config import BuildConfig

    return build_engine(smollm2_checkpoint, tmp_path_factory.mktemp("smollm2") / "fp32", BuildConfig(max_seq_len=512, max_batch_size=8))


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_checkpoint):
    """The HF transformers model of the default model, fp32, eager attention."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_checkpoint, dtype=torch.float32, attn_implementation="eager").eval()


def random_llama(num_layers: int = 2, *, hidden: int = 8, heads: int = 2, kv_heads: int = 1, vocab: int = 16,
                 seed: int = 0):
    """A workbench Llama module tree with seeded random weights, no HF involved (for graph-level tests)."""
    from workbench.builder.models.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(architecture="LlamaForCausalLM", vocab_size=vocab, hidden_size=hidden,
                         intermediate_size=2 * hidden, num_layers=num_layers, num_heads=heads, num_kv_heads=kv_heads,
                         head_dim=hidden // heads, rms_norm_eps=1e-5, rope_theta=10000.0,
                         sliding_windows=[None] * num_layers)
    model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(seed)
    model.load_state_dict({k: torch.randn(p.shape, generator=g) for k, p in model.named_parameters()})
    return model
