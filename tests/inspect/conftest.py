"""Fixtures for the diff tests: tiny Llama checkpoints with a byte-level tokenizer, engines, planted faults."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# hidden 64, 4 heads of 16 (2 KV heads), 3 layers; a larger init than HF's 0.02 keeps the
# greedy choices well separated, so rounding noise never flips a token.
TINY = dict(vocab_size=272, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, initializer_range=0.1)
TOKENS = [1, 40, 71, 78, 78, 81, 223, 89, 81, 84, 78, 70, 14, 223, 74, 130, 105, 78, 78, 81]
HEAD_DIM = 16


def save_tokenizer(path: Path) -> None:
    """A byte-level tokenizer (259 tokens: 3 specials + 256 bytes) saved as an HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)


def make_tiny_checkpoint(path: Path, seed: int = 0, tokenizer: bool = True, **overrides) -> Path:
    """Save a seeded random tiny Llama (random norm scales too) as an HF checkpoint dir."""
    from transformers import LlamaConfig

    from workbench.inspect.tiny_models import random_model

    config = LlamaConfig(**{**TINY, **overrides})
    config.architectures = ["LlamaForCausalLM"]
    random_model(config, seed).save_pretrained(path)
    if tokenizer:
        save_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A 3-layer tiny Llama checkpoint with a tokenizer."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("diffckpt") / "tiny")


@pytest.fixture(scope="session")
def engine_fp32(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint built as an fp32 engine directory (read-only: plant faults in copies)."""
    from workbench.builder.build import build_engine

    return build_engine(tiny_ckpt, tmp_path_factory.mktemp("diffeng") / "fp32")


@pytest.fixture(scope="session")
def engine_bf16(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint built as a bf16 engine directory."""
    from workbench.builder.build import build_engine
    from workbench.builder.config import BuildConfig

    return build_engine(tiny_ckpt, tmp_path_factory.mktemp("diffeng") / "bf16", BuildConfig(dtype="bf16"))


@pytest.fixture(scope="session")
def baseline_fp32(engine_fp32):
    """The fp32 HF baseline of the tiny engine, loaded once."""
    from workbench.inspect.baseline import Baseline

    return Baseline.for_engine(engine_fp32)


def _swap_rows(w: torch.Tensor, a: int, b: int, size: int) -> torch.Tensor:
    w = w.clone()
    w[a * size:(a + 1) * size], w[b * size:(b + 1) * size] = w[b * size:(b + 1) * size].clone(), w[a * size:(a + 1) * size].clone()
    return w


# fault kind -> (how it edits layer i's weights, the canonical node it should be found at)
FAULTS = {
    "swap_q_heads": (lambda ws, i: {f"layers.{i}.attn.qkv.weight": _swap_rows(ws[f"layers.{i}.attn.qkv.weight"], 0, 1, HEAD_DIM)},
                     "layers.{i}.attn.qkv"),
    "scale_o_proj": (lambda ws, i: {f"layers.{i}.attn.o_proj.weight": ws[f"layers.{i}.attn.o_proj.weight"] * 1.5},
                     "layers.{i}.attn"),
    "zero_post_norm": (lambda ws, i: {f"layers.{i}.post_norm.weight": torch.zeros_like(ws[f"layers.{i}.post_norm.weight"])},
                       "layers.{i}.post_norm"),
    "zero_input_norm": (lambda ws, i: {f"layers.{i}.input_norm.weight": torch.zeros_like(ws[f"layers.{i}.input_norm.weight"])},
                        "layers.{i}.input_norm"),
    "scale_mlp_down": (lambda ws, i: {f"layers.{i}.mlp.down.weight": ws[f"layers.{i}.mlp.down.weight"] * 0.5},
                       "layers.{i}.mlp"),
}


def plant(engine, out_dir: Path, edits: dict[str, torch.Tensor]):
    """A copy of `engine` with some weights replaced, saved as a new engine directory (same source checkpoint)."""
    from workbench.builder.engine import Engine, save_engine

    net = engine.network.copy()
    for k, v in edits.items():
        assert k in net.weights and net.weights[k].shape == v.shape, k
        net.weights[k] = v.to(net.weights[k].dtype).contiguous()
    faulty = Engine(network=net, architecture=engine.architecture, model_config=engine.model_config,
                    build_config=engine.build_config, source=dict(engine.source))
    tok = engine.tokenizer_dir
    save_engine(faulty, out_dir, tokenizer_files=sorted(tok.iterdir()) if tok else [])
    return faulty


@pytest.fixture(scope="session")
def planted(engine_fp32, tmp_path_factory):
    """A factory: (fault kind, layer) -> (saved faulty engine, the canonical name the fault is at)."""
    made = {}

    def get(kind: str, layer: int):
        if (kind, layer) not in made:
            edit, node = FAULTS[kind]
            out = tmp_path_factory.mktemp("planted") / f"{kind}-{layer}"
            made[(kind, layer)] = (plant(engine_fp32, out, edit(engine_fp32.network.weights, layer)), node.format(i=layer))
        return made[(kind, layer)]

    return get
