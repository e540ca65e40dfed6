"""Next-token sampling that matches HF transformers' `generate` for the same options.

Order, as `generate` applies its processors: repetition penalty, then (when sampling)
temperature, top-k, top-p, then a multinomial draw. Greedy is argmax after the
repetition penalty, since HF applies the penalty in greedy decoding too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.errors import WorkbenchError


class SamplingConfigError(WorkbenchError):
    """A sampling option out of range."""


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling options; the defaults mean plain greedy decoding."""

    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0
    seed: int | None = None

    def validate(self) -> None:
        """Raise SamplingConfigError naming the first option out of range."""
        # Written as `not (ok)` so that NaN fails too.
        if not (self.temperature >= 0) or math.isinf(self.temperature):
            raise SamplingConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplingConfigError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not (0 < self.top_p <= 1):
            raise SamplingConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not (self.repetition_penalty > 0) or math.isinf(self.repetition_penalty):
            raise SamplingConfigError(
                f"repetition_penalty must be a finite number > 0 (1 = off), got {self.repetition_penalty}"
            )

    @property
    def greedy(self) -> bool:
        """Whether this config picks the argmax instead of drawing."""
        return self.temperature == 0


def apply_repetition_penalty(scores: Tensor, history: list[list[int]], penalty: float) -> Tensor:
    """Divide positive / multiply negative scores [B, V] of every token seen in each row's history."""
    if penalty == 1.0:
        return scores
    batch, vocab = scores.shape
    seen = torch.zeros(batch, vocab, dtype=torch.bool, device=scores.device)  # [B, V]
    rows = [r for r, ids in enumerate(history) for _ in ids]
    cols = [t for ids in history for t in ids]
    if cols:
        rows_t = torch.tensor(rows, dtype=torch.long, device=scores.device)
        cols_t = torch.tensor(cols, dtype=torch.long, device=scores.device)
        # Ids beyond the output vocab cannot be generated, so (as HF does) they are skipped.
        ok = (cols_t >= 0) & (cols_t < vocab)
        seen[rows_t[ok], cols_t[ok]] = True
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalized, scores)


def apply_temperature(scores: Tensor, temperature: float) -> Tensor:
    """Scale scores [B, V] by 1/temperature (temperature > 0)."""
    return scores / temperature


def apply_top_k(scores: Tensor, top_k: int) -> Tensor:
    """Set to -inf every score below the k-th largest of its row; ties with it are kept."""
    k = min(top_k, scores.shape[-1])
    kth = torch.topk(scores, k).values[..., -1:]  # [B, 1]
    return scores.masked_fill(scores < kth, -math.inf)


def apply_top_p(scores: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability sums to >= top_p (at least one)."""
    # Ascending sort, as HF does, so the tail to drop is a prefix: its cumulative mass
    # is at most 1 - top_p. Same ops in the same order keep the result bit-identical.
    sorted_scores, order = torch.sort(scores, descending=False)  # [B, V]
    cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
    drop_sorted = cum <= (1 - top_p)
    drop_sorted[..., -1:] = False  # the most likely token always stays
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return scores.masked_fill(drop, -math.inf)


class Sampler:
    """Picks the next token per row from logits, with its own seeded generator."""

    def __init__(self, config: SamplingConfig, device: str | torch.device = "cpu"):
        config.validate()
        self.config = config
        self.generator = torch.Generator(device=device)
        if config.seed is None:
            # Record the random seed drawn, so that a run can still be reproduced.
            self.seed = self.generator.seed()
        else:
            self.seed = config.seed
            self.generator.manual_seed(config.seed)

    def process(self, logits: Tensor, history: list[list[int]] | None = None) -> Tensor:
        """The float32 scores [B, V] that the draw uses, after every enabled processor."""
        cfg = self.config
        scores = logits.float()  # [B, V]
        if cfg.repetition_penalty != 1.0:
            if history is None or len(history) != scores.shape[0]:
                got = "no history" if history is None else f"history for {len(history)} rows"
                raise ValueError(f"repetition_penalty needs one history per row: {scores.shape[0]} rows, {got}")
            scores = apply_repetition_penalty(scores, history, cfg.repetition_penalty)
        if cfg.greedy:
            return scores
        # Skipped when off, as HF skips them: even a no-op changes nothing but the time.
        if cfg.temperature != 1.0:
            scores = apply_temperature(scores, cfg.temperature)
        if cfg.top_k:
            scores = apply_top_k(scores, cfg.top_k)
        if cfg.top_p < 1.0:
            scores = apply_top_p(scores, cfg.top_p)
        return scores

    def sample(self, logits: Tensor, history: list[list[int]] | None = None) -> tuple[Tensor, Tensor]:
        """Return (tokens [B] int64, logprobs [B] float32 of the raw logits at those tokens)."""
        if logits.dim() != 2:
            raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
        scores = self.process(logits, history)  # [B, V]
        if self.config.greedy:
            tokens = scores.argmax(dim=-1)  # [B]
        else:
            probs = scores.softmax(dim=-1)  # [B, V]
            tokens = torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1)  # [B]
        raw_logprobs = torch.log_softmax(logits.float(), dim=-1)  # [B, V]
        logprobs = raw_logprobs.gather(1, tokens[:, None]).squeeze(1)  # [B]
        return tokens, logprobs
