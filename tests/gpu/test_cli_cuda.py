"""`wb run --backend cuda` end to end on a tiny checkpoint with a small word-level tokenizer."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from workbench.cli import main

pytestmark = pytest.mark.gpu
WORDS = ["[UNK]", "</s>", "the", "sea", "is", "blue", "and", "wide", "a", "ship", "sails", "on", "it", "."]


def _tiny_checkpoint_with_tokenizer(path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>").save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=1, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_wb_run_backend_cuda_matches_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    ckpt = _tiny_checkpoint_with_tokenizer(tmp_path / "ckpt")
    args = ["run", str(ckpt), "--prompt", "the sea is", "--max-new-tokens", "8", "--dtype", "fp16"]
    ref = CliRunner().invoke(main, args + ["--device", "cuda"])
    fast = CliRunner().invoke(main, args + ["--backend", "cuda"])
    assert ref.exit_code == 0 and fast.exit_code == 0, ref.output + fast.output
    def text(res):
        return [line for line in res.output.splitlines() if line.startswith("the sea is")]

    assert text(fast) == text(ref) and text(ref)  # the same text, token for token
