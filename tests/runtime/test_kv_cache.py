"""The paged KV cache against the contiguous one, plus allocation and error behaviour."""

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.runtime.kv_cache import ContiguousKVCache, KVCacheFullError, PagedKVCache

LAYERS, HEADS, DIM = 2, 3, 4


def paged(num_blocks=16, page_size=4):
    return PagedKVCache(LAYERS, HEADS, DIM, num_blocks=num_blocks, page_size=page_size)


def contiguous(max_batch=4, max_seq_len=64):
    return ContiguousKVCache(LAYERS, HEADS, DIM, max_batch=max_batch, max_seq_len=max_seq_len)


def kv(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, HEADS, DIM, generator=g), torch.randn(n, HEADS, DIM, generator=g)  # [n, H, D] each


# Each sequence: a prompt (one write of many tokens) then single-token decode steps.
SEQS = {"a": (5, 7), "b": (1, 12), "c": (17, 3), 7: (16, 1)}


def interleaved_writes():
    """(layer, seq_id, start, k, v) in the order a batched executor would write them."""
    writes, seed = [], 0
    for layer in range(LAYERS):
        for seq_id, (prompt, _) in SEQS.items():
            writes.append((layer, seq_id, 0, *kv(prompt, seed)))
            seed += 1
    for step in range(max(decode for _, decode in SEQS.values())):
        for layer in range(LAYERS):
            for seq_id, (prompt, decode) in SEQS.items():
                if step < decode:
                    writes.append((layer, seq_id, prompt + step, *kv(1, seed)))
                    seed += 1
    return writes


def total_len(seq_id):
    prompt, decode = SEQS[seq_id]
    return prompt + decode


@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_paged_reads_match_contiguous_bit_for_bit(page_size):
    caches = [paged(num_blocks=64, page_size=page_size), contiguous(max_batch=len(SEQS), max_seq_len=32)]
    for cache in caches:
        # Reserve as a batch manager does: the prompt first, then one more token per step.
        cache.reserve_all({s: p for s, (p, _) in SEQS.items()})
        for layer, seq_id, start, k, v in interleaved_writes():
            cache.reserve(seq_id, start + k.shape[0])
            cache.write(layer, seq_id, start, k, v)
    for seq_id in SEQS:
        for layer in range(LAYERS):
            for length in (0, 1, total_len(seq_id)):
                k_p, v_p = caches[0].read(layer, seq_id, length)
                k_c, v_c = caches[1].read(layer, seq_id, length)
                assert k_p.shape == (length, HEADS, DIM)
                assert torch.equal(k_p, k_c) and torch.equal(v_p, v_c)


def test_reads_return_what_was_written():
    cache = paged(page_size=4)
    cache.reserve("s", 10)
    k, v = kv(10, 0)
    cache.write(1, "s", 0, k[:6], v[:6])
    cache.write(1, "s", 6, k[6:], v[6:])
    k_r, v_r = cache.read(1, "s", 10)
    assert torch.equal(k_r, k) and torch.equal(v_r, v)


def test_block_table_grows_across_page_boundaries():
    cache = paged(num_blocks=8, page_size=4)
    cache.reserve("a", 4)
    assert cache.block_table("a") == [0]
    cache.reserve("b", 1)
    assert cache.block_table("b") == [1]
    cache.reserve("a", 5)  # one past the page boundary
    assert cache.block_table("a") == [0, 2]
    assert cache.capacity("a") == 8
    cache.reserve("a", 8)  # still fits in the pages it has
    assert cache.block_table("a") == [0, 2]
    cache.reserve("a", 3)  # a smaller total never shrinks a table
    assert cache.block_table("a") == [0, 2]
    assert cache.num_used_blocks == 3 and cache.num_free_blocks == 5
    assert cache.sequences() == ["a", "b"]


def test_freed_blocks_are_reused_lowest_first():
    cache = paged(num_blocks=6, page_size=2)
    cache.reserve_all({"a": 4, "b": 2, "c": 4})  # a: [0, 1], b: [2], c: [3, 4]
    cache.release("a")
    cache.reserve("d", 6)
    assert cache.block_table("d") == [0, 1, 5]


@pytest.mark.parametrize("make", [paged, contiguous])
def test_overflow_raises_and_allocates_nothing(make):
    cache = make()
    fill = {i: 16 for i in range(4)}  # paged: 4 pages each; contiguous: one slot each
    cache.reserve_all(fill)
    cache.release(3)
    free, used = cache.num_free_blocks, cache.num_used_blocks
    with pytest.raises(KVCacheFullError) as info:
        cache.reserve_all({"x": 16, "y": 16})
    assert isinstance(info.value, WorkbenchError)
    message = str(info.value)
    assert "free" in message and "smaller batch" in message and "\n" not in message
    assert (cache.num_free_blocks, cache.num_used_blocks) == (free, used)
    assert "x" not in cache.sequences() and "y" not in cache.sequences()
    cache.reserve("x", 16)  # one of them alone does fit
    assert cache.num_free_blocks == 0


def test_paged_overflow_message_counts_blocks():
    cache = paged(num_blocks=4, page_size=4)
    cache.reserve("a", 8)
    with pytest.raises(KVCacheFullError, match=r"needs 3 more blocks to hold 12 tokens .* only 2 of 4 blocks"):
        cache.reserve("b", 12)
    assert cache.block_table("b") == [] and "b" not in cache.sequences()


def test_contiguous_rejects_sequence_longer_than_slot():
    cache = contiguous(max_seq_len=8)
    assert not cache.can_reserve({"a": 9})
    with pytest.raises(KVCacheFullError, match="max_seq_len=8"):
        cache.reserve("a", 9)
    assert cache.num_used_blocks == 0


@pytest.mark.parametrize("make", [paged, contiguous])
def test_can_reserve(make):
    cache = make()
    assert cache.can_reserve({"a": 16, "b": 16, "c": 16, "d": 16})
    assert not cache.can_reserve({"a": 16, "b": 16, "c": 16, "d": 16, "e": 1})
    cache.reserve_all({"a": 16, "b": 16, "c": 16})
    assert cache.can_reserve({"a": 16, "d": 16})  # a already holds its space
    assert not cache.can_reserve({"d": 16, "e": 1})
    assert cache.num_used_blocks == (12 if isinstance(cache, PagedKVCache) else 3)  # can_reserve allocates nothing


@pytest.mark.parametrize("make", [paged, contiguous])
def test_no_leaks_after_release(make):
    cache = make()
    total = cache.num_free_blocks
    cache.reserve_all({"a": 3, "b": 9})
    cache.reserve("c", 5)
    cache.release("b")
    cache.release("b")  # twice is fine
    cache.release("never-seen")  # unknown ids are a no-op
    cache.reserve("d", 16)
    cache.release_all()
    assert cache.num_free_blocks == total and cache.num_used_blocks == 0
    assert cache.sequences() == []
    assert cache.capacity("a") == 0


@pytest.mark.parametrize("make", [paged, contiguous])
def test_write_past_capacity_errors(make):
    cache = make()
    cache.reserve("a", 5)
    cap = cache.capacity("a")
    assert cap >= 5
    k, v = kv(2, 0)
    cache.write(0, "a", cap - 2, k, v)  # up to the last position is fine
    with pytest.raises(IndexError, match="reserve"):
        cache.write(0, "a", cap - 1, k, v)
    with pytest.raises(IndexError):
        cache.write(0, "unknown", 0, k, v)
    with pytest.raises(IndexError):
        cache.read(0, "a", cap + 1)


@pytest.mark.parametrize("make", [paged, contiguous])
def test_write_checks_shapes(make):
    cache = make()
    cache.reserve("a", 4)
    with pytest.raises(ValueError, match=r"\[n, 3, 4\]"):
        cache.write(0, "a", 0, torch.zeros(2, HEADS, DIM + 1), torch.zeros(2, HEADS, DIM + 1))


def test_sizes():
    cache = PagedKVCache.for_budget(LAYERS, HEADS, DIM, max_tokens=100, page_size=16, dtype=torch.float16, device="cpu")
    assert cache.num_blocks == 7  # ceil(100 / 16)
    assert cache.layers[0].shape == (7, 2, 16, HEADS, DIM)
    assert cache.nbytes == LAYERS * 7 * 2 * 16 * HEADS * DIM * 2
    assert contiguous(max_batch=2, max_seq_len=8).nbytes == LAYERS * 2 * 2 * 8 * HEADS * DIM * 4


def test_half_precision_writes_identical():
    caches = [
        PagedKVCache(1, HEADS, DIM, num_blocks=4, page_size=4, dtype=torch.bfloat16),
        ContiguousKVCache(1, HEADS, DIM, max_batch=1, max_seq_len=16, dtype=torch.bfloat16),
    ]
    k, v = kv(11, 3)
    for cache in caches:
        cache.reserve("s", 11)
        cache.write(0, "s", 0, k, v)  # float32 in, stored as bf16
    (k_p, v_p), (k_c, v_c) = (c.read(0, "s", 11) for c in caches)
    assert k_p.dtype == torch.bfloat16
    assert torch.equal(k_p, k_c) and torch.equal(v_p, v_c)
