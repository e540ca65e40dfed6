"""Calibration statistics (data only) and the token ids they are gathered on.

The statistics are collected by running the network through the torch executor with the
input of every target linear (and k, v of every attention) marked as an output: see
workbench/runtime/calibration.py, which the passes reach through the graph runner (runner.py).
Sequential GPTQ cannot use statistics of the unquantized network; it runs the token ids again,
quantizing as it goes (the runner's quantize_sequentially).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.builder.quantization.calib_text import CALIBRATION_TEXT
from workbench.builder.quantization.config import QuantConfig
from workbench.errors import WorkbenchError


@dataclass
class InputStats:
    """What a linear's input looked like over the calibration tokens."""

    linear: str  # the linear node
    input: str  # the node it reads
    amax: torch.Tensor  # [K] max |x| per input channel
    absmean: torch.Tensor  # [K] mean |x| per input channel
    tokens: int = 0
    hessian: torch.Tensor | None = None  # [K, K] X^T X / tokens (GPTQ)
    samples: torch.Tensor | None = None  # [n, K] a subset of the input rows (AWQ)

    @property
    def tensor_amax(self) -> float:
        """max |x| over every token and channel."""
        return float(self.amax.max())


@dataclass
class KVStats:
    """Per-head max |k| and |v| of one attention layer, over the calibration tokens."""

    attention: str
    k_amax: torch.Tensor  # [Hkv]
    v_amax: torch.Tensor  # [Hkv]


@dataclass
class Calibration:
    """Statistics per target linear (by node name) and per attention node."""

    inputs: dict[str, InputStats] = field(default_factory=dict)
    kv: dict[str, KVStats] = field(default_factory=dict)
    tokens: int = 0
    source: str = ""  # where the token ids came from
    sequences: list[list[int]] = field(default_factory=list)  # the token ids (sequential GPTQ runs them again)


def calibration_texts(config: QuantConfig) -> tuple[list[str], str]:
    """The calibration texts and a description of where they came from."""
    if config.calib_file:
        path = Path(config.calib_file)
        try:
            return [path.read_text(encoding="utf-8")], str(path)
        except (OSError, UnicodeDecodeError) as e:
            raise WorkbenchError(f"{path}: cannot read the calibration file ({e})") from None
    if config.calib_prompts:
        return list(config.calib_prompts), f"{len(config.calib_prompts)} prompts"
    return [CALIBRATION_TEXT], "built-in calibration text"


def calibration_ids(config: QuantConfig, checkpoint_dir: str | Path | None, vocab_size: int) -> tuple[list[list[int]], str]:
    """Token-id samples for calibration and their source.

    Text is tokenized with the checkpoint's tokenizer.json (the `tokenizers` library); prompts
    are one sample each (cut at calib_seq_len), a file or the built-in text is cut into
    calib_samples pieces of calib_seq_len tokens. A checkpoint without a tokenizer (the tiny
    test models) gets seeded random ids.
    """
    tok_file = Path(checkpoint_dir) / "tokenizer.json" if checkpoint_dir else None
    n, length = config.calib_samples, config.calib_seq_len
    if tok_file is None or not tok_file.is_file():
        g = torch.Generator().manual_seed(config.seed)
        ids = torch.randint(0, vocab_size, (n, length), generator=g)
        return ids.tolist(), f"{n} x {length} random token ids (no tokenizer.json)"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_file))
    texts, source = calibration_texts(config)
    if config.calib_prompts and not config.calib_file:
        samples = [tok.encode(t).ids[:length] for t in texts[:n]]
    else:
        stream = [i for t in texts for i in tok.encode(t).ids]
        samples = [stream[i:i + length] for i in range(0, len(stream), length)][:n]
    samples = [s for s in samples if s]
    if not samples:
        raise WorkbenchError(f"calibration: {source} gives no tokens")
    return samples, f"{source}: {len(samples)} samples, {sum(map(len, samples))} tokens"
