"""What the attention op needs from the runtime: sequence boundaries, past lengths, the KV cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AttentionMeta:
    """Per-step layout of the packed token batch [T] as sequences.

    Sequence i owns tokens q_lens[i] in a row, at positions past_lens[i] .. past_lens[i] + q_lens[i] - 1.
    With `cache` None, every past length must be 0 (a plain forward pass).
    """

    seq_ids: list[Any]
    q_lens: list[int]
    past_lens: list[int]
    cache: Any = None  # PagedKVCache or ContiguousKVCache
    # values every layer of one step shares (RoPE's cos/sin), computed by the first op that needs them
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def prefill(cls, lengths: list[int], cache=None, seq_ids=None) -> "AttentionMeta":
        """Fresh sequences of the given lengths."""
        return cls(list(seq_ids if seq_ids is not None else range(len(lengths))), list(lengths), [0] * len(lengths), cache)

    @property
    def num_tokens(self) -> int:
        return sum(self.q_lens)
