"""GenerationSession: context phase, then one token per step through a (paged) KV cache.

Sampling, stop conditions, streaming, timings, and `debug_mode`, which returns the
marked tensors of a debug engine for the context phase and chosen generation steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.builder.engine import Engine
from workbench.builder.network import torch_dtype
from workbench.errors import WorkbenchError
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.executor import Executor
from workbench.runtime.kv_cache import ContiguousKVCache, PagedKVCache
from workbench.runtime.sampler import Sampler, SamplingConfig

TokenCallback = Callable[[int, int, str], None]  # (sequence index, token id, new text)


@dataclass
class GenerationConfig:
    """How long to generate, how to sample, when to stop."""

    max_new_tokens: int = 32
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stop_strings: list[str] = field(default_factory=list)
    eos_token_ids: list[int] | None = None  # None: the model's own EOS ids; [] never stops on EOS
    debug_steps: list[int] | None = None  # generation steps whose marked tensors debug mode keeps; None = all

    def validate(self) -> None:
        """A WorkbenchError naming the bad field."""
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise WorkbenchError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        self.sampling.validate()


@dataclass
class Timings:
    """Wall-clock seconds of a generate call."""

    time_to_first_token_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    decode_steps: int = 0
    generated_tokens: int = 0
    first_tokens: int = 0  # tokens sampled from the context phase (one per sequence)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second over the generation phase (all sequences)."""
        tokens = self.generated_tokens - self.first_tokens
        return tokens / self.decode_s if self.decode_s > 0 else 0.0


@dataclass
class StepTensors:
    """The marked tensors of one phase/step, per sequence: tensors[i][name]."""

    phase: str  # "context" or "generation"
    step: int  # 0 for the context phase; generation steps count from 1
    tensors: list[dict[str, torch.Tensor]]


@dataclass
class GenerationResult:
    """What a generate call produced."""

    prompt_ids: list[list[int]]
    token_ids: list[list[int]]  # generated tokens per sequence (stop tokens included)
    logprobs: list[list[float]]  # log-probability of each generated token under the raw logits
    finish_reasons: list[str]  # "eos", "stop_string" or "length"
    texts: list[str] | None
    timings: Timings
    debug: list[StepTensors] = field(default_factory=list)

    def save_debug(self, out_dir: str | Path) -> Path:
        """Write the debug tensors as safetensors, one file per phase/step and sequence."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for st in self.debug:
            for i, tensors in enumerate(st.tensors):
                name = f"{st.phase}-step{st.step:04d}-seq{i}.safetensors"
                tmp = out / f".{name}.tmp"
                save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
                tmp.replace(out / name)
        return out


class GenerationSession:
    """Runs an engine for batches of prompts with a KV cache; one session serves many generate calls."""

    def __init__(self, engine: Engine, *, device: str = "cpu", tokenizer=None, paged: bool = True,
                 debug_mode: bool = False, kv_cache_tokens: int | None = None, executor: Executor | None = None):
        self.engine = engine
        self.executor = executor or Executor(engine, device)
        self.tokenizer = tokenizer
        self.debug_mode = debug_mode
        bc = engine.build_config
        attn = [n for n in engine.network.nodes.values() if n.op == "attention"]
        if not attn:
            raise WorkbenchError("engine has no attention op; nothing to cache")
        num_layers = max(n.attrs["layer"] for n in attn) + 1
        kv_heads, head_dim = attn[0].attrs["num_kv_heads"], attn[0].attrs["head_dim"]
        dtype = torch_dtype(engine.network.dtype)
        if attn[0].attrs.get("kv_cache_dtype"):  # quantized KV cache: values stored as int8 / fp8
            from workbench.runtime.quant_ops import KV_DTYPES

            dtype = KV_DTYPES[attn[0].attrs["kv_cache_dtype"]]
        if paged:
            tokens = kv_cache_tokens or bc.max_batch_size * bc.max_seq_len
            self.cache = PagedKVCache.for_budget(num_layers, kv_heads, head_dim, max_tokens=tokens,
                                                 page_size=bc.kv_page_size, dtype=dtype, device=device)
        else:
            self.cache = ContiguousKVCache(num_layers, kv_heads, head_dim, max_batch=bc.max_batch_size,
                                           max_seq_len=bc.max_seq_len, dtype=dtype, device=device)
        eos = engine.model_config.get("eos_token_ids") or []
        self.default_eos = list(eos)

    # -- helpers -------------------------------------------------------------------------
    def encode(self, prompts: list[str] | list[list[int]]) -> list[list[int]]:
        """Token ids for text prompts (with the session's tokenizer) or ids passed through."""
        out = []
        for p in prompts:
            if isinstance(p, str):
                if self.tokenizer is None:
                    raise WorkbenchError("text prompts need a tokenizer; pass tokenizer= or token ids")
                p = self.tokenizer.encode(p)
            if not p:
                raise WorkbenchError("a prompt is empty")
            out.append([int(t) for t in p])
        return out

    def _check_limits(self, prompts: list[list[int]], max_new: int) -> None:
        bc = self.engine.build_config
        if len(prompts) > bc.max_batch_size:
            raise WorkbenchError(f"batch of {len(prompts)} prompts exceeds the engine's max batch size "
                                 f"{bc.max_batch_size}; rebuild with --max-batch-size")
        longest = max(len(p) for p in prompts)
        if longest + max_new > bc.max_seq_len:
            raise WorkbenchError(f"prompt of {longest} tokens + {max_new} new tokens exceeds the engine's max "
                                 f"sequence length {bc.max_seq_len}; rebuild with --max-seq-len")
        vocab = self.engine.model_config.get("vocab_size")
        bad = [t for p in prompts for t in p if vocab is not None and not 0 <= t < vocab]
        if bad:
            raise WorkbenchError(f"token id {bad[0]} is outside the vocabulary (size {vocab})")

    # -- generation ----------------------------------------------------------------------
    def generate(self, prompts: list[str] | list[list[int]], config: GenerationConfig | None = None,
                 on_token: TokenCallback | None = None) -> GenerationResult:
        """Generate for a batch of prompts; every KV block is returned to the cache afterwards."""
        config = config or GenerationConfig()
        config.validate()
        ids = self.encode(prompts)
        self._check_limits(ids, config.max_new_tokens)
        seq_ids = list(range(len(ids)))
        self.cache.reserve_all({s: len(p) + config.max_new_tokens for s, p in zip(seq_ids, ids)})
        try:
            return self._generate(ids, seq_ids, config, on_token)
        finally:
            for s in seq_ids:
                self.cache.release(s)

    def _generate(self, ids, seq_ids, config: GenerationConfig, on_token) -> GenerationResult:
        eos = set(self.default_eos if config.eos_token_ids is None else config.eos_token_ids)
        sampler = Sampler(config.sampling, device="cpu")
        n = len(ids)
        generated: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        reasons = ["length"] * n
        texts = ["" for _ in range(n)] if self.tokenizer is not None else None
        debug: list[StepTensors] = []
        timings = Timings()
        t0 = time.perf_counter()

        # context phase: every prompt in one packed batch
        lengths = [len(p) for p in ids]
        tokens = torch.tensor([t for p in ids for t in p], dtype=torch.int64)
        positions = torch.cat([torch.arange(k, dtype=torch.int64) for k in lengths])
        outs = self.executor.run(tokens, positions, AttentionMeta(seq_ids, lengths, [0] * n, self.cache))
        last = torch.tensor(lengths).cumsum(0) - 1
        logits = outs["logits"][last]  # [B, V]
        if self.debug_mode:
            debug.append(StepTensors("context", 0, _split_marked(outs, lengths)))
        active = list(range(n))
        step = 0
        first_done = None
        while True:
            history = [ids[i] + generated[i] for i in active]
            new, lp = sampler.sample(logits.float().cpu(), history)
            for row, i in enumerate(active):
                tok = int(new[row])
                generated[i].append(tok)
                logprobs[i].append(float(lp[row]))
                piece = self._new_text(i, generated[i], texts)
                if on_token:
                    on_token(i, tok, piece)
                if tok in eos:
                    reasons[i] = "eos"
                elif texts is not None and config.stop_strings and _trim_stop(texts, i, config.stop_strings):
                    reasons[i] = "stop_string"
            if first_done is None:
                first_done = time.perf_counter()
                timings.time_to_first_token_s = first_done - t0
                timings.first_tokens = len(active)
            active = [i for i in active if reasons[i] == "length" and len(generated[i]) < config.max_new_tokens]
            if not active:
                break
            step += 1
            past = [len(ids[i]) + len(generated[i]) - 1 for i in active]
            tokens = torch.tensor([generated[i][-1] for i in active], dtype=torch.int64)
            meta = AttentionMeta([seq_ids[i] for i in active], [1] * len(active), past, self.cache)
            outs = self.executor.run(tokens, torch.tensor(past, dtype=torch.int64), meta)
            logits = outs["logits"]
            timings.decode_steps += 1
            if self.debug_mode and (config.debug_steps is None or step in config.debug_steps):
                per_seq = _split_marked(outs, [1] * len(active))
                full: list[dict] = [{} for _ in range(n)]
                for row, i in enumerate(active):
                    full[i] = per_seq[row]
                debug.append(StepTensors("generation", step, full))
        end = time.perf_counter()
        timings.total_s = end - t0
        timings.decode_s = end - first_done
        timings.generated_tokens = sum(len(g) for g in generated)
        return GenerationResult(ids, generated, logprobs, reasons, texts, timings, debug)

    def _new_text(self, i: int, generated: list[int], texts: list[str] | None) -> str:
        """Incremental detokenisation: the text added by the newest token (may be '' mid-character)."""
        if texts is None:
            return ""
        full = self.tokenizer.decode(generated, skip_special_tokens=True)
        if full.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        piece = full[len(texts[i]):] if full.startswith(texts[i]) else full
        texts[i] = full
        return piece


def _split_marked(outs: dict[str, torch.Tensor], lengths: list[int]) -> list[dict[str, torch.Tensor]]:
    marked = {k: v for k, v in outs.items() if k != "logits"}
    parts = {k: torch.split(v, lengths) for k, v in marked.items()}
    result = [{k: p[i] for k, p in parts.items()} for i in range(len(lengths))]
    for i, r in enumerate(result):
        r["logits"] = torch.split(outs["logits"], lengths)[i]
    return result


def _trim_stop(texts: list[str], i: int, stops: list[str]) -> bool:
    """Cut sequence i's text at the first stop string; True if one was found."""
    hits = [texts[i].find(s) for s in stops if s in texts[i]]
    if not hits:
        return False
    texts[i] = texts[i][:min(hits)]
    return True
