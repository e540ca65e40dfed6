"""The real default model: greedy generation identical to HF generate in fp32, single and batched, paged and not."""

from __future__ import annotations

import torch

from workbench.runtime.session import GenerationConfig, GenerationSession
from workbench.tokenizer import chat_prompt, load_tokenizer

PROMPTS = ["The capital of France is", "Hi", "Once upon a time, in a small village by the sea, there lived an old", "def fib(n):"]


@torch.inference_mode()
def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_smollm2_greedy_matches_hf_generate(smollm2_engine, smollm2_hf):
    tokenizer = load_tokenizer(smollm2_engine)
    ids = [tokenizer.encode(p) for p in PROMPTS] + [chat_prompt(tokenizer, "What is 2 + 2?")]
    assert len({len(p) for p in ids}) >= 4  # prompts of different lengths
    expected = [hf_greedy(smollm2_hf, p, 32) for p in ids]
    session = GenerationSession(smollm2_engine, tokenizer=tokenizer)
    batched = session.generate(ids, GenerationConfig(max_new_tokens=32))
    assert batched.token_ids == expected
    assert session.cache.num_used_blocks == 0
    single = session.generate([ids[1]], GenerationConfig(max_new_tokens=32))
    assert single.token_ids == [expected[1]]
    unpaged = GenerationSession(smollm2_engine, tokenizer=tokenizer, paged=False)
    assert unpaged.generate(ids[:2], GenerationConfig(max_new_tokens=32)).token_ids == expected[:2]
    assert "Paris" in batched.texts[0]
