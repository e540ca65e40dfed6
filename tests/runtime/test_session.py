"""GenerationSession against HF generate on the tiny families: greedy parity, caches, sampling, limits, debug mode."""

from __future__ import annotations

import pytest
import torch

from workbench.builder.build import build_engine, debug_engine
from workbench.builder.config import BuildConfig
from workbench.errors import WorkbenchError
from workbench.runtime.executor import Executor
from workbench.runtime.kv_cache import KVCacheFullError
from workbench.runtime.sampler import SamplingConfig
from workbench.runtime.session import GenerationConfig, GenerationSession

FAMILIES = ["llama_gqa", "llama_mqa", "llama3_rope", "llama_tied", "mistral_window", "qwen2_bias"]
BATCH = [[1, 17, 42, 99, 3, 64, 7], [5, 9, 101], [127], [0, 44, 90, 23, 61, 18, 70, 4, 11, 12]]


@pytest.fixture(scope="module")
def engines(hf_checkpoint, tmp_path_factory):
    """name -> (engine, HF model), built once per module."""
    made = {}

    def get(name):
        if name not in made:
            ckpt, model = hf_checkpoint(name)
            out = tmp_path_factory.mktemp("eng") / name
            made[name] = (build_engine(ckpt, out, BuildConfig(max_seq_len=64, max_batch_size=4, kv_page_size=4)), model)
        return made[name]

    return get


@torch.inference_mode()
def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])  # an explicit mask: HF would otherwise mask prompt tokens equal to the pad id
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_batch_matches_hf_generate(engines, family):
    engine, model = engines(family)
    expected = [hf_greedy(model, p, 32) for p in BATCH]
    for paged in (True, False):
        session = GenerationSession(engine, paged=paged)
        result = session.generate(BATCH, GenerationConfig(max_new_tokens=32))
        assert result.token_ids == expected, f"paged={paged}"
        assert session.cache.num_used_blocks == 0
    single = GenerationSession(engine).generate([BATCH[0]], GenerationConfig(max_new_tokens=32))
    assert single.token_ids == [expected[0]]


def test_eos_stops_a_sequence_and_reasons(engines):
    engine, model = engines("llama_gqa")
    free_run = GenerationSession(engine).generate([BATCH[0]], GenerationConfig(max_new_tokens=8, eos_token_ids=[]))
    eos = free_run.token_ids[0][3]
    result = GenerationSession(engine).generate([BATCH[0]], GenerationConfig(max_new_tokens=8, eos_token_ids=[eos]))
    first = free_run.token_ids[0].index(eos)
    assert result.token_ids[0] == free_run.token_ids[0][: first + 1]
    assert result.finish_reasons == ["eos"]
    assert free_run.finish_reasons == ["length"]


def test_seeded_sampling_is_reproducible(engines):
    engine, _ = engines("llama_gqa")
    session = GenerationSession(engine)

    def sample(seed):
        cfg = GenerationConfig(max_new_tokens=16, eos_token_ids=[],
                               sampling=SamplingConfig(temperature=1.5, top_k=50, top_p=0.95, repetition_penalty=1.2, seed=seed))
        return session.generate(BATCH, cfg).token_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_streaming_callback_sees_every_token_in_order(engines):
    engine, _ = engines("llama_gqa")
    seen: dict[int, list[int]] = {}
    result = GenerationSession(engine).generate(BATCH, GenerationConfig(max_new_tokens=5, eos_token_ids=[]),
                                                on_token=lambda i, tok, piece: seen.setdefault(i, []).append(tok))
    assert [seen[i] for i in range(len(BATCH))] == result.token_ids
    assert all(len(lp) == 5 and all(x <= 0 for x in lp) for lp in result.logprobs)
    t = result.timings
    assert t.generated_tokens == 20 and t.decode_steps == 4 and t.time_to_first_token_s > 0 and t.decode_tokens_per_s > 0


def test_blocks_are_returned_even_when_a_callback_fails(engines):
    engine, _ = engines("llama_gqa")
    session = GenerationSession(engine)

    def boom(i, tok, piece):
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError):
        session.generate(BATCH, GenerationConfig(max_new_tokens=4), on_token=boom)
    assert session.cache.num_used_blocks == 0
    assert session.cache.num_free_blocks == session.cache.num_blocks


def test_a_batch_that_cannot_fit_gets_a_clear_error(engines):
    engine, _ = engines("llama_gqa")
    session = GenerationSession(engine, kv_cache_tokens=24)  # 6 pages of 4 tokens
    with pytest.raises(KVCacheFullError, match="free"):
        session.generate(BATCH, GenerationConfig(max_new_tokens=8))
    assert session.cache.num_used_blocks == 0
    ok = session.generate([BATCH[2]], GenerationConfig(max_new_tokens=8))  # 9 tokens fit in 3 pages
    assert len(ok.token_ids[0]) >= 1
    with pytest.raises(WorkbenchError, match="max batch size"):
        GenerationSession(engine).generate(BATCH + BATCH, GenerationConfig(max_new_tokens=2))
    with pytest.raises(WorkbenchError, match="max sequence length"):
        GenerationSession(engine).generate([BATCH[0]], GenerationConfig(max_new_tokens=60))
    with pytest.raises(WorkbenchError, match="vocabulary"):
        GenerationSession(engine).generate([[1, 100000]], GenerationConfig(max_new_tokens=2))
    with pytest.raises(WorkbenchError, match="max_new_tokens"):
        GenerationSession(engine).generate([[1]], GenerationConfig(max_new_tokens=0))


def test_debug_mode_returns_marked_tensors_per_phase_and_step(engines, tmp_path):
    engine, _ = engines("llama_gqa")
    dbg = debug_engine(engine, ["layers.1", "1.attn.core"])
    session = GenerationSession(dbg, debug_mode=True)
    result = session.generate(BATCH[:2], GenerationConfig(max_new_tokens=6, eos_token_ids=[], debug_steps=[2, 5]))
    phases = [(d.phase, d.step) for d in result.debug]
    assert phases == [("context", 0), ("generation", 2), ("generation", 5)]
    # each captured tensor equals a cache-free forward of the whole sequence at that position
    full = [p + g for p, g in zip(BATCH[:2], result.token_ids)]
    reference = Executor(dbg).forward(full)
    for d in result.debug:
        for i, tensors in enumerate(d.tensors):
            pos = slice(0, len(BATCH[i])) if d.phase == "context" else slice(len(BATCH[i]) + d.step - 1, len(BATCH[i]) + d.step)
            for name in ("layers.1", "layers.1.attn.core", "logits"):
                torch.testing.assert_close(tensors[name], reference[i][name][pos], rtol=1e-4, atol=1e-4)
    written = result.save_debug(tmp_path / "dbg")
    assert sorted(p.name for p in written.iterdir())[0] == "context-step0000-seq0.safetensors"
    plain = GenerationSession(dbg).generate(BATCH[:2], GenerationConfig(max_new_tokens=6, eos_token_ids=[]))
    assert plain.debug == [] and plain.token_ids == result.token_ids
