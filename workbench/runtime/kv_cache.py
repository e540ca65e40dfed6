"""KV caches: a paged cache (blocks + block tables) and the unpaged one it replaces.

Both share one interface so the executor's attention op does not care which it has:
per layer and per sequence it calls `write(layer, seq, start, k, v)` for the new
tokens, then `read(layer, seq, length)` for the whole history. Space is claimed up
front with `reserve` / `reserve_all` (all-or-nothing), so running out of memory is a
clear `KVCacheFullError` before a step starts, never halfway through it.

The contiguous cache is deliberately the plain version (one slice per sequence): it is
the reference the paged cache is tested against, bit for bit.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from typing import Protocol

import torch
from torch import Tensor

from workbench.errors import WorkbenchError


class KVCacheFullError(WorkbenchError):
    """The KV cache has no room for the requested tokens."""


class KVCache(Protocol):
    """What the executor and the batch manager need from a KV cache."""

    def reserve(self, seq_id: Hashable, num_tokens: int) -> None: ...
    def can_reserve(self, needs: dict) -> bool: ...
    def reserve_all(self, needs: dict) -> None: ...
    def release(self, seq_id: Hashable) -> None: ...
    def release_all(self) -> None: ...
    def write(self, layer: int, seq_id: Hashable, start: int, k: Tensor, v: Tensor) -> None: ...
    def read(self, layer: int, seq_id: Hashable, length: int) -> tuple[Tensor, Tensor]: ...
    def capacity(self, seq_id: Hashable) -> int: ...
    def sequences(self) -> list: ...


class _FreeList:
    """Free ids 0..n-1, handed out lowest first so allocation is deterministic."""

    def __init__(self, n: int):
        self._heap = list(range(n))  # a sorted list is already a valid heap

    def __len__(self) -> int:
        return len(self._heap)

    def pop(self) -> int:
        return heapq.heappop(self._heap)

    def push_all(self, ids: Iterable[int]) -> None:
        for i in ids:
            heapq.heappush(self._heap, i)


def _check_kv(k: Tensor, v: Tensor, num_kv_heads: int, head_dim: int) -> int:
    """Check k and v are [n, num_kv_heads, head_dim] and return n."""
    expected = (num_kv_heads, head_dim)
    if k.dim() != 3 or tuple(k.shape[1:]) != expected or k.shape != v.shape:
        raise ValueError(
            f"k and v must both be [n, {num_kv_heads}, {head_dim}], got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    return k.shape[0]


def _check_range(seq_id: Hashable, end: int, capacity: int, what: str) -> None:
    # Past the reservation is a bug in the caller (executor or batch manager), not a
    # user error, hence IndexError rather than a WorkbenchError.
    if end > capacity:
        raise IndexError(
            f"{what} up to position {end} of sequence {seq_id!r} exceeds its reserved capacity "
            f"of {capacity} tokens; call reserve() first"
        )


def _advice(larger: str) -> str:
    return f"use a smaller batch or shorter prompts, or a larger KV cache ({larger})"


class _PooledKVCache:
    """What both caches share: a pool of per-layer slots, the checks around write and read, and the bookkeeping.

    A subclass maps a sequence's positions onto the pool (`_store`, `_gather`), reserves and
    releases its space, and says how many tokens it can hold (`capacity`). The counts are
    named after the paged cache's blocks, so callers and tests can treat both alike.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, *, pool: int, slot_len: int,
                 dtype: torch.dtype, device: str | torch.device):
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.device = torch.device(device)
        # Index 0 along dim 1 holds k, index 1 holds v. Left uninitialised: reads never reach
        # past what was written, and untouched pages of a large pool then cost no memory.
        self.layers = [
            torch.empty(pool, 2, slot_len, num_kv_heads, head_dim, dtype=dtype, device=self.device)
            for _ in range(num_layers)
        ]  # each [pool, 2, slot_len, H, D]
        self._pool = pool
        self._free = _FreeList(pool)

    def reserve(self, seq_id: Hashable, num_tokens: int) -> None:
        """Make sure seq_id can hold num_tokens tokens in total; allocates nothing on failure."""
        self.reserve_all({seq_id: num_tokens})

    def release_all(self) -> None:
        """Release every sequence."""
        for seq_id in self.sequences():
            self.release(seq_id)

    def write(self, layer: int, seq_id: Hashable, start: int, k: Tensor, v: Tensor) -> None:
        """Store k, v [n, H, D] at positions start..start+n-1 of seq_id."""
        n = _check_kv(k, v, self.num_kv_heads, self.head_dim)
        _check_range(seq_id, start + n, self.capacity(seq_id), "write")
        if n:
            self._store(self.layers[layer], seq_id, start, k, v)

    def read(self, layer: int, seq_id: Hashable, length: int) -> tuple[Tensor, Tensor]:
        """Return k, v [length, H, D] for positions 0..length-1 of seq_id."""
        _check_range(seq_id, length, self.capacity(seq_id), "read")
        if length == 0:
            empty = self.layers[layer].new_empty(0, self.num_kv_heads, self.head_dim)
            return empty, empty.clone()
        return self._gather(self.layers[layer], seq_id, length)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self._pool - len(self._free)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers)


class PagedKVCache(_PooledKVCache):
    """KV cache in fixed-size pages; each sequence owns a block table of page ids."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        num_blocks: int,
        page_size: int = 16,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if num_blocks < 1 or page_size < 1:
            raise WorkbenchError(f"KV cache needs num_blocks >= 1 and page_size >= 1, got {num_blocks} and {page_size}")
        super().__init__(num_layers, num_kv_heads, head_dim, pool=num_blocks, slot_len=page_size, dtype=dtype,
                         device=device)  # each layer [num_blocks, 2, page_size, H, D]
        self.num_blocks = num_blocks
        self.page_size = page_size
        self._tables: dict[Hashable, list[int]] = {}
        # Block tables as device tensors, rebuilt only when a table grows: a decode step
        # writes and reads every layer, so building them per call would dominate.
        self._table_tensors: dict[Hashable, Tensor] = {}

    @classmethod
    def for_budget(
        cls,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        max_tokens: int,
        page_size: int = 16,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> PagedKVCache:
        """A cache with enough blocks for max_tokens tokens in total (each sequence may waste part of one page)."""
        num_blocks = max(1, -(-max_tokens // page_size))
        return cls(
            num_layers, num_kv_heads, head_dim, num_blocks=num_blocks, page_size=page_size, dtype=dtype, device=device
        )

    # -- allocation ----------------------------------------------------------------

    def _blocks_needed(self, seq_id: Hashable, num_tokens: int) -> int:
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        have = len(self._tables.get(seq_id, ()))
        return max(0, -(-num_tokens // self.page_size) - have)

    def _full_error(self, blocks: int, tokens: int, who: str) -> KVCacheFullError:
        return KVCacheFullError(
            f"KV cache full: {who} needs {blocks} more blocks to hold {tokens} tokens (page size {self.page_size}) "
            f"but only {self.num_free_blocks} of {self.num_blocks} blocks are free; {_advice('more blocks')}"
        )

    def can_reserve(self, needs: dict) -> bool:
        """Whether every {seq_id: total_tokens} in needs fits at once."""
        return sum(self._blocks_needed(s, n) for s, n in needs.items()) <= len(self._free)

    def reserve_all(self, needs: dict) -> None:
        """Reserve {seq_id: total_tokens} for a whole batch, all or nothing."""
        per_seq = {s: self._blocks_needed(s, n) for s, n in needs.items()}
        total = sum(per_seq.values())
        if total > len(self._free):
            who = f"sequence {next(iter(needs))!r}" if len(needs) == 1 else f"a batch of {len(needs)} sequences"
            raise self._full_error(total, sum(needs.values()), who)
        for seq_id, n in per_seq.items():
            table = self._tables.setdefault(seq_id, [])
            if n:
                table.extend(self._free.pop() for _ in range(n))
                self._table_tensors.pop(seq_id, None)

    def release(self, seq_id: Hashable) -> None:
        """Return seq_id's blocks to the free list; unknown ids are ignored."""
        self._free.push_all(self._tables.pop(seq_id, ()))
        self._table_tensors.pop(seq_id, None)

    # -- data ----------------------------------------------------------------------

    def _table_tensor(self, seq_id: Hashable) -> Tensor:
        t = self._table_tensors.get(seq_id)
        if t is None:
            t = torch.tensor(self._tables[seq_id], dtype=torch.long, device=self.device)
            self._table_tensors[seq_id] = t
        return t

    def _store(self, cache: Tensor, seq_id: Hashable, start: int, k: Tensor, v: Tensor) -> None:
        n = k.shape[0]
        if n == 1:  # a decode step: plain integer indexing, no index tensors to build per layer
            block, offset = self._tables[seq_id][start // self.page_size], start % self.page_size
            cache[block, 0, offset] = k[0].to(cache.device, cache.dtype)
            cache[block, 1, offset] = v[0].to(cache.device, cache.dtype)
            return
        pos = torch.arange(start, start + n, device=self.device)  # [n]
        blocks = self._table_tensor(seq_id)[pos // self.page_size]  # [n]
        offsets = pos % self.page_size  # [n]
        cache[blocks, 0, offsets] = k.to(cache.device, cache.dtype)
        cache[blocks, 1, offsets] = v.to(cache.device, cache.dtype)

    def _gather(self, cache: Tensor, seq_id: Hashable, length: int) -> tuple[Tensor, Tensor]:
        num_pages = -(-length // self.page_size)
        table = self._table_tensor(seq_id)[:num_pages]  # [pages]
        # Gather whole pages of k and of v (one copy each), lay them end to end, cut the tail.
        shape = (num_pages * self.page_size, self.num_kv_heads, self.head_dim)
        k = cache[table, 0].reshape(shape)  # [pages P, H, D]
        v = cache[table, 1].reshape(shape)
        return k[:length], v[:length]  # each [length, H, D]

    # -- bookkeeping ---------------------------------------------------------------

    def block_table(self, seq_id: Hashable) -> list[int]:
        """The page ids of seq_id in position order (a copy)."""
        return list(self._tables.get(seq_id, ()))

    def capacity(self, seq_id: Hashable) -> int:
        """Tokens seq_id can hold without another reserve (whole pages; 0 if unknown)."""
        return len(self._tables.get(seq_id, ())) * self.page_size

    def sequences(self) -> list:
        """Sequence ids holding a reservation, in the order they were first reserved."""
        return list(self._tables)


class ContiguousKVCache(_PooledKVCache):
    """Unpaged KV cache: one slot of max_seq_len tokens per sequence, max_batch slots."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        max_batch: int,
        max_seq_len: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if max_batch < 1 or max_seq_len < 1:
            raise WorkbenchError(
                f"KV cache needs max_batch >= 1 and max_seq_len >= 1, got {max_batch} and {max_seq_len}"
            )
        super().__init__(num_layers, num_kv_heads, head_dim, pool=max_batch, slot_len=max_seq_len, dtype=dtype,
                         device=device)  # each layer [max_batch, 2, max_seq_len, H, D]
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len
        self._slots: dict[Hashable, int] = {}

    # -- allocation ----------------------------------------------------------------

    def _check_length(self, needs: dict) -> None:
        for seq_id, n in needs.items():
            if n < 0:
                raise ValueError(f"num_tokens must be >= 0, got {n}")
            if n > self.max_seq_len:
                raise KVCacheFullError(
                    f"KV cache full: sequence {seq_id!r} needs {n} tokens but a slot holds at most "
                    f"max_seq_len={self.max_seq_len}; use shorter prompts or fewer new tokens, or a larger max_seq_len"
                )

    def _slots_needed(self, needs: dict) -> int:
        return sum(1 for s in needs if s not in self._slots)

    def can_reserve(self, needs: dict) -> bool:
        """Whether every {seq_id: total_tokens} in needs fits at once."""
        if any(n > self.max_seq_len for n in needs.values()):
            return False
        return self._slots_needed(needs) <= len(self._free)

    def reserve_all(self, needs: dict) -> None:
        """Reserve {seq_id: total_tokens} for a whole batch, all or nothing."""
        self._check_length(needs)
        wanted = self._slots_needed(needs)
        if wanted > len(self._free):
            raise KVCacheFullError(
                f"KV cache full: {len(needs)} sequences ({sum(needs.values())} tokens) need {wanted} more slots "
                f"but only {self.num_free_slots} of {self.max_batch} slots are free; {_advice('a larger max_batch')}"
            )
        for seq_id in needs:
            if seq_id not in self._slots:
                self._slots[seq_id] = self._free.pop()

    def release(self, seq_id: Hashable) -> None:
        """Free seq_id's slot; unknown ids are ignored."""
        slot = self._slots.pop(seq_id, None)
        if slot is not None:
            self._free.push_all([slot])

    # -- data ----------------------------------------------------------------------

    def _store(self, cache: Tensor, seq_id: Hashable, start: int, k: Tensor, v: Tensor) -> None:
        n = k.shape[0]
        slot = self._slots[seq_id]
        cache[slot, 0, start : start + n] = k.to(cache.device, cache.dtype)
        cache[slot, 1, start : start + n] = v.to(cache.device, cache.dtype)

    def _gather(self, cache: Tensor, seq_id: Hashable, length: int) -> tuple[Tensor, Tensor]:
        slot = cache[self._slots[seq_id]]  # [2, max_seq_len, H, D]
        # Clone so that callers get a snapshot, as the paged cache's gather gives them.
        return slot[0, :length].clone(), slot[1, :length].clone()

    # -- bookkeeping ---------------------------------------------------------------

    def slot(self, seq_id: Hashable) -> int | None:
        """The slot index of seq_id, or None if it has none."""
        return self._slots.get(seq_id)

    def capacity(self, seq_id: Hashable) -> int:
        """Tokens seq_id can hold: max_seq_len once it has a slot, else 0."""
        return self.max_seq_len if seq_id in self._slots else 0

    def sequences(self) -> list:
        """Sequence ids holding a slot, in the order they were reserved."""
        return list(self._slots)

    @property
    def num_free_slots(self) -> int:
        return len(self._free)
