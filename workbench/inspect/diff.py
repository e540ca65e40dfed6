"""`wb diff`: an engine's marked tensors against the HF model it was built from, one row per canonical name.

Running is separate from judging, as in Polygraphy: `capture` runs both sides once and
keeps their tensors (a `DiffRun`); `compare` judges one step in one mode (a `DiffReport`).

Modes:
- `accumulated`: the engine runs end to end; each row carries every error upstream of it.
- `local`: every engine node whose name is a canonical name is fed HF's value of it
  (`Executor.forward(substitute=...)`), so each row shows only the error its own node adds.

Steps: step 0 is the context phase over the prompt (every prompt position is compared);
step k >= 1 is the k-th greedy generation step, whose input is HF's k-th greedy token
(one position). The engine runs one forward pass over the prompt and HF's greedy tokens:
without a KV cache it is causal, so row `prompt_len - 1 + k` is what the engine computes at
step k given the same prefix.

Backends: `torch` (the reference) runs that one forward pass. `cuda` (the fast path) runs the
sequence as it serves it: the context phase over the prompt through a paged KV cache (flash
attention), then one decode step per generated token (paged attention; a CUDA-graph replay on a
GPU), each fed HF's token; rows are the same positions either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.builder.build import debug_engine
from workbench.builder.engine import Engine
from workbench.builder.models import FAMILIES
from workbench.errors import PatternError, WorkbenchError
from workbench.inspect.baseline import Baseline, BaselineRun, check_tokenizer, load_tokenizer
from workbench.inspect.metrics import TensorMetrics
from workbench.inspect.tolerances import Tolerances, Verdict, check
from workbench.names import match
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.backends import make_executor, resolve_device
from workbench.runtime.executor import Executor

MODES = ("accumulated", "local")
# 32 tokens with SmolLM2's tokenizer
DEFAULT_PROMPT = ("The sky looks blue during the day because air molecules scatter the short blue wavelengths "
                  "of sunlight more strongly than the longer red ones. At sunset, the light travels through")


@dataclass
class DiffRow:
    """One canonical name: its error metrics and pass/fail verdict."""

    name: str
    metrics: TensorMetrics
    verdict: Verdict

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        return {"name": self.name, "metrics": self.metrics.to_dict(), "verdict": self.verdict.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "DiffRow":
        """The inverse of `to_dict`."""
        return cls(d["name"], TensorMetrics.from_dict(d["metrics"]), Verdict.from_dict(d["verdict"]))


@dataclass
class DiffReport:
    """The rows of one diff, in layer order, and what was compared: mode, step, tokens, model, engine."""

    mode: str
    step: int
    rows: list[DiffRow]
    token_ids: list[int]  # every token fed up to this step
    positions: list[int]  # the positions compared: the prompt at step 0, one position after
    prompt: str | None = None
    model: dict = field(default_factory=dict)  # checkpoint, architecture, num_layers, dtype
    engine: dict = field(default_factory=dict)  # path, dtype, weights_sha256, backend, device
    tolerances: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every row passed."""
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[DiffRow]:
        """The rows that failed, in layer order."""
        return [r for r in self.rows if not r.passed]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    def row(self, name: str) -> DiffRow:
        """The row of one name; KeyError when absent."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite floats as strings)."""
        return {"mode": self.mode, "step": self.step, "passed": self.passed, "rows": [r.to_dict() for r in self.rows],
                "token_ids": list(self.token_ids), "positions": list(self.positions), "prompt": self.prompt,
                "model": dict(self.model), "engine": dict(self.engine), "tolerances": dict(self.tolerances),
                "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, d: dict) -> "DiffReport":
        """The inverse of `to_dict`."""
        return cls(mode=d["mode"], step=int(d["step"]), rows=[DiffRow.from_dict(r) for r in d["rows"]],
                   token_ids=[int(t) for t in d["token_ids"]], positions=[int(p) for p in d["positions"]],
                   prompt=d.get("prompt"), model=dict(d.get("model", {})), engine=dict(d.get("engine", {})),
                   tolerances=dict(d.get("tolerances", {})), warnings=list(d.get("warnings", [])))


@dataclass
class DiffRun:
    """Both sides' tensors over one token sequence: what `compare` judges."""

    names: list[str]  # the rows, in layer order
    baseline: BaselineRun
    engine_outputs: dict[str, dict[str, torch.Tensor]]  # mode -> name -> [L, ...] over the whole sequence
    prompt: str | None
    model: dict
    engine: dict
    warnings: list[str]

    @property
    def prompt_len(self) -> int:
        return len(self.baseline.prompt_ids)

    @property
    def steps(self) -> list[int]:
        """The steps whose HF tensors were captured."""
        return sorted(self.baseline.captures)

    def positions(self, step: int) -> list[int]:
        """The sequence positions a step covers."""
        n = self.prompt_len
        return list(range(n)) if step == 0 else [n - 1 + step]

    def engine_logits(self, mode: str = "accumulated") -> torch.Tensor:
        """The engine's logits [K + 1, V] at the last position of each step."""
        rows = torch.arange(self.prompt_len - 1, self.prompt_len + self.baseline.num_steps)
        return self.engine_outputs[mode]["logits"][rows].float()


def diffable_names(engine: Engine) -> list[str]:
    """The canonical names of an engine that have an HF counterpart, in execution (layer) order."""
    family = FAMILIES.get(engine.architecture)
    if family is None:
        raise WorkbenchError(f"engine architecture {engine.architecture!r} has no HF name map; "
                             f"supported: {', '.join(FAMILIES)}")
    hf = family.hf_name_map(family.LlamaConfig.from_dict(engine.model_config))
    return [n for n in engine.network.nodes if n in hf]


def select_names(engine: Engine, patterns: str | list[str] | None) -> list[str]:
    """The diffable names the patterns select, in layer order; PatternError (with suggestions) otherwise."""
    names = diffable_names(engine)
    if patterns is None or (not isinstance(patterns, str) and not list(patterns)):
        return names
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = [q.strip() for p in patterns for q in p.split(",") if q.strip()]
    for p in patterns:
        try:
            match([p], names)
        except PatternError:
            internal = match([p], engine.network.markable_names, strict=False)
            if internal:
                raise PatternError(f"layer pattern {p!r} selects only engine-internal nodes ({', '.join(internal[:3])}"
                                   f"{', ...' if len(internal) > 3 else ''}) with no HF counterpart; diffable names "
                                   f"are the canonical ones: embed, layers.N.input_norm, layers.N.attn.qkv, "
                                   f"layers.N.attn.core, layers.N.attn, layers.N.post_norm, layers.N.mlp, "
                                   f"layers.N, final_norm, logits") from None
            raise
    return match(patterns, names)


def tokenize(engine: Engine, prompt: str, checkpoint: Path | None = None) -> list[int]:
    """The prompt's token ids under the engine's tokenizer, checked against the model."""
    ckpt = checkpoint or Path(engine.source.get("checkpoint") or "")
    tokenizer = load_tokenizer(engine, ckpt if ckpt.is_dir() else None)
    if ckpt.is_dir():
        check_tokenizer(engine, ckpt, tokenizer)
    ids = tokenizer(prompt)["input_ids"]
    if not ids:
        raise WorkbenchError(f"the prompt {prompt!r} has no tokens")
    return [int(t) for t in ids]


def parse_steps(text: str | int | list[int] | None) -> list[int]:
    """`"4"` -> steps 0..4; `"0,3,7"` or `"2-5"` -> exactly those; sorted, unique, each >= 0."""
    if text is None:
        return [0]
    if isinstance(text, int):
        items = [str(text)]
    elif isinstance(text, str):
        items = [t for t in text.replace(" ", ",").split(",")]
    else:
        return sorted({_step(str(t), str(text)) for t in text})
    if len(items) == 1 and "-" not in items[0]:
        return list(range(_step(items[0], str(text)) + 1))
    steps: set[int] = set()
    for item in (t.strip() for t in items):
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        a = _step(lo, str(text))
        b = _step(hi, str(text)) if sep else a
        if b < a:
            raise WorkbenchError(f"--steps {text!r}: range {item!r} is empty")
        steps.update(range(a, b + 1))
    if not steps:
        raise WorkbenchError(f"--steps {text!r}: no steps given")
    return sorted(steps)


def _step(item: str, text: str) -> int:
    try:
        value = int(item.strip())
    except ValueError:
        raise WorkbenchError(f"--steps {text!r}: {item.strip()!r} is not a step number; use N (steps 0..N) "
                             "or a list such as 0,3,5-7") from None
    if value < 0:
        raise WorkbenchError(f"--steps {text!r}: steps are >= 0 (0 is the context phase)")
    return value


def capture(engine: Engine, names: list[str], *, token_ids: list[int], modes=("accumulated",), steps=(0,),
            baseline: Baseline | None = None, prompt: str | None = None, device: str = "cpu",
            backend: str = "torch") -> DiffRun:
    """Run HF (context phase + greedy steps up to max(steps)) and the engine over the same tokens.

    The engine always runs end to end (its logits give its greedy choices); with "local" in
    `modes` it also runs once with every canonical name replaced by HF's value. `backend`:
    torch or cuda (see the module's docstring).
    """
    for mode in modes:
        if mode not in MODES:
            raise WorkbenchError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    steps = sorted(set(steps))
    if not steps or steps[0] < 0:
        raise WorkbenchError("steps must be >= 0 (0 is the context phase)")
    resolve_device(backend, device)  # before HF runs: a backend that cannot run here fails at once
    baseline = baseline or Baseline.for_engine(engine, device=device)
    max_step = steps[-1]
    seq_len = len(token_ids) + max_step
    if seq_len > engine.build_config.max_seq_len:
        raise WorkbenchError(f"{len(token_ids)} prompt tokens + {max_step} steps exceed the engine's max_seq_len "
                             f"{engine.build_config.max_seq_len}")
    local = "local" in modes
    # Local mode feeds HF's value of every canonical name at every position, so it needs them all.
    hf_names = diffable_names(engine) if local else names
    hf_names = [n for n in hf_names if n in baseline.name_map]
    hf = baseline.run(token_ids, hf_names, steps=max_step, capture_steps=None if local else steps)

    executor = make_executor(debug_engine(engine, names), device, backend)
    seq = hf.sequence
    run = _forward if backend == "torch" else _served
    outputs = {"accumulated": _cpu(run(executor, seq, len(token_ids), None))}
    if local:
        substitute = {n: hf.full(n) for n in hf_names}
        outputs["local"] = _cpu(run(executor, seq, len(token_ids), substitute))
    model_info = {"checkpoint": str(baseline.checkpoint), "architecture": engine.architecture,
                  "num_layers": engine.model_config.get("num_layers"), "dtype": baseline.dtype}
    engine_info = {"path": str(engine.path) if engine.path else None, "dtype": engine.build_config.dtype,
                   "weights_sha256": engine.weights_sha256, "backend": executor.backend, "device": str(executor.device)}
    return DiffRun(names=list(names), baseline=hf, engine_outputs=outputs, prompt=prompt, model=model_info,
                   engine=engine_info, warnings=list(baseline.warnings))


def _forward(executor: Executor, seq: list[int], prompt_len: int,
             substitute: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """One causal forward pass over the whole sequence (no cache): every output [L, ...]."""
    return executor.forward([seq], substitute=[substitute] if substitute else None)[0]


def _served(executor: Executor, seq: list[int], prompt_len: int,
            substitute: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The sequence as generation runs it: the prompt in one step, then one decode step per later token,
    through a paged KV cache; every output [L, ...], as `_forward` gives it."""
    from workbench.runtime.session import GenerationSession

    # the session's cache has the engine's KV layout and dtype (a quantized cache too)
    cache = GenerationSession(executor.engine, device=str(executor.device), executor=executor,
                              kv_cache_tokens=len(seq)).cache
    cache.reserve(0, len(seq))
    parts: list[dict[str, torch.Tensor]] = []
    try:
        start = 0
        for end in [prompt_len] + list(range(prompt_len + 1, len(seq) + 1)):
            sub = {k: v[start:end] for k, v in substitute.items()} if substitute else None
            meta = AttentionMeta([0], [end - start], [start], cache)
            outs = executor.run(torch.tensor(seq[start:end]), torch.arange(start, end), meta, substitute=sub)
            parts.append(_cpu(outs))
            start = end
    finally:
        cache.release(0)
        if hasattr(executor, "release_graphs"):  # a decode graph captured over this cache holds on to it
            executor.release_graphs()
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _cpu(outs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu") for k, v in outs.items()}


def compare(run: DiffRun, step: int, mode: str, tolerances: Tolerances | None = None) -> DiffReport:
    """Judge every name of `run` at one step in one mode."""
    tol = tolerances or Tolerances()
    if mode not in run.engine_outputs:
        raise WorkbenchError(f"mode {mode!r} was not run; run modes: {', '.join(run.engine_outputs)}")
    if step not in run.baseline.captures:
        raise WorkbenchError(f"step {step} was not captured; captured steps: {run.steps}")
    pos = run.positions(step)
    rows_idx = torch.tensor(pos)
    eng = run.engine_outputs[mode]
    ref = run.baseline.captures[step]
    rows = []
    for name in run.names:
        metrics, verdict = check(name, eng[name][rows_idx], ref[name], tol)
        rows.append(DiffRow(name, metrics, verdict))
    tokens = run.baseline.sequence[: pos[-1] + 1]
    return DiffReport(mode=mode, step=step, rows=rows, token_ids=tokens, positions=pos, prompt=run.prompt,
                      model=dict(run.model), engine=dict(run.engine), tolerances=tol.to_dict(),
                      warnings=list(run.warnings))


def prepare(engine: Engine, layers: str | list[str] | None, *, prompt: str | None, token_ids: list[int] | None,
            tolerances: Tolerances | None, baseline: Baseline | None, baseline_dtype: str | None,
            device: str) -> tuple[list[str], list[int], Baseline]:
    """The checks every diff does first: names, tolerance patterns, the baseline model, the tokens."""
    names = select_names(engine, layers)
    if tolerances is not None:
        tolerances.check_patterns(diffable_names(engine))
    baseline = baseline or Baseline.for_engine(engine, dtype=baseline_dtype, device=device)
    if token_ids is None:
        token_ids = tokenize(engine, prompt if prompt is not None else DEFAULT_PROMPT, baseline.checkpoint)
    return names, [int(t) for t in token_ids], baseline


def diff(engine: Engine, layers: str | list[str] | None = None, *, modes=("accumulated",), steps=(0,),
         prompt: str | None = None, token_ids: list[int] | None = None, tolerances: Tolerances | None = None,
         baseline: Baseline | None = None, baseline_dtype: str | None = None, device: str = "cpu",
         backend: str = "torch") -> list[DiffReport]:
    """Diff the engine against its HF model: one report per (step, mode), rows in layer order.

    `layers` are patterns (`12.attn`, `*.mlp`, `all`; default all); without `token_ids` the
    prompt (default DEFAULT_PROMPT) is tokenized with the engine's tokenizer. `backend`: the
    engine's executor, torch (reference) or cuda (fast path).
    """
    if isinstance(modes, str):
        modes = (modes,)
    names, ids, baseline = prepare(engine, layers, prompt=prompt, token_ids=token_ids, tolerances=tolerances,
                                   baseline=baseline, baseline_dtype=baseline_dtype, device=device)
    used_prompt = None if token_ids is not None else (prompt if prompt is not None else DEFAULT_PROMPT)
    run = capture(engine, names, token_ids=ids, modes=modes, steps=steps, baseline=baseline, prompt=used_prompt,
                  device=device, backend=backend)
    return [compare(run, s, m, tolerances) for s in sorted(set(steps)) for m in modes]
