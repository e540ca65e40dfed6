"""Where does the engine first go wrong: across layers (in a report) and across generated tokens.

Across layers, two answers: the first name, in layer order, whose verdict fails, and the
first name whose error jumps: its `rel_l2` exceeds `jump_factor` times the largest
`rel_l2` of the names before it (never less than the rounding error of the dtypes
compared, so noise at the start of the model is no jump). The running maximum, not the
row just before, is the yardstick because errors differ by kind of row: a block output
(`layers.3.mlp`) carries a larger relative error than the residual stream it is added to.

Across tokens: HF decodes greedily; at each step the engine's top-1 token is read off its
logits given the same prefix. The first step where they differ is the token divergence;
the layer diffs at that step (same inputs on both sides) say where it comes from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from workbench.builder.engine import Engine
from workbench.inspect.baseline import Baseline
from workbench.inspect.diff import DEFAULT_PROMPT, DiffReport, DiffRun, capture, compare, prepare
from workbench.inspect.metrics import float_from_json, float_to_json
from workbench.inspect.tolerances import Tolerances
from workbench.names import layer_index

DEFAULT_JUMP_FACTOR = 10.0
DEFAULT_SEARCH_STEPS = 16
_EPS = {"float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


@dataclass
class LayerDivergence:
    """The first failing name and the first error jump of one report."""

    mode: str
    step: int
    first_failing: str | None
    first_failing_reason: str | None
    first_jump: str | None
    jump_ratio: float  # the jump's rel_l2 over the running max before it (nan when no jump)
    jump_value: float  # its rel_l2 (nan when no jump)
    jump_factor: float  # the threshold used
    floor: float  # the smallest running max used (rounding error of the dtypes)

    @property
    def layer(self) -> int | None:
        """The decoder layer of the first failing name (else of the first jump), if any."""
        name = self.first_failing or self.first_jump
        return layer_index(name) if name else None

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        d = asdict(self)
        for k in ("jump_ratio", "jump_value", "jump_factor", "floor"):
            d[k] = float_to_json(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerDivergence":
        """The inverse of `to_dict`."""
        d = dict(d)
        for k in ("jump_ratio", "jump_value", "jump_factor", "floor"):
            d[k] = float_from_json(d[k])
        return cls(**d)


def rounding_floor(report: DiffReport) -> float:
    """The relative rounding error of the coarser dtype of the two sides compared."""
    dtypes = [report.engine.get("dtype"), report.model.get("dtype")]
    return max(_EPS.get(str(d), _EPS["float32"]) for d in dtypes)


def layer_divergence(report: DiffReport, *, jump_factor: float = DEFAULT_JUMP_FACTOR,
                     floor: float | None = None) -> LayerDivergence:
    """The first failing name and the first rel_l2 jump of a report, in layer order."""
    floor = rounding_floor(report) if floor is None else floor
    failing = next((r for r in report.rows if not r.passed), None)
    jump, ratio, value = None, math.nan, math.nan
    running = floor
    for r in report.rows:
        err = r.metrics.rel_l2
        if math.isnan(err) or err > jump_factor * running:
            jump, value = r.name, err
            ratio = math.inf if math.isnan(err) else err / running
            break
        running = max(running, err)
    return LayerDivergence(mode=report.mode, step=report.step, first_failing=failing.name if failing else None,
                           first_failing_reason=failing.verdict.reason if failing else None, first_jump=jump,
                           jump_ratio=ratio, jump_value=value, jump_factor=jump_factor, floor=floor)


@dataclass
class TokenDivergence:
    """The first generation step where the engine's greedy token differs from HF's (step None: none did)."""

    steps_checked: int  # steps 0..steps_checked - 1 were compared
    step: int | None
    position: int | None  # the sequence position whose logits chose the token
    hf_tokens: list[int]  # HF's greedy choice at each step checked
    engine_tokens: list[int]  # the engine's top-1 at each step checked, given HF's prefix
    hf_token: int | None = None
    engine_token: int | None = None
    hf_logprob: float = math.nan  # HF's logprob of its own choice
    engine_logprob: float = math.nan  # the engine's logprob of its own choice
    hf_logprob_of_engine_token: float = math.nan
    engine_logprob_of_hf_token: float = math.nan
    hf_text: str | None = None
    engine_text: str | None = None
    reports: list[DiffReport] = field(default_factory=list)  # the layer diffs at that step, per mode
    layers: list[LayerDivergence] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.step is not None

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        d = {k: v for k, v in vars(self).items() if k not in ("reports", "layers")}
        for k in ("hf_logprob", "engine_logprob", "hf_logprob_of_engine_token", "engine_logprob_of_hf_token"):
            d[k] = float_to_json(d[k])
        d["reports"] = [r.to_dict() for r in self.reports]
        d["layers"] = [x.to_dict() for x in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TokenDivergence":
        """The inverse of `to_dict`."""
        d = dict(d)
        for k in ("hf_logprob", "engine_logprob", "hf_logprob_of_engine_token", "engine_logprob_of_hf_token"):
            d[k] = float_from_json(d[k])
        d["reports"] = [DiffReport.from_dict(r) for r in d["reports"]]
        d["layers"] = [LayerDivergence.from_dict(x) for x in d["layers"]]
        return cls(**d)


def token_divergence(run: DiffRun, modes=None, tolerances: Tolerances | None = None, *,
                     jump_factor: float = DEFAULT_JUMP_FACTOR,
                     decode: Callable[[list[int]], str] | None = None) -> TokenDivergence:
    """Compare greedy choices at steps 0..K of a run; at the first difference, diff the layers there."""
    hf_logp = torch.log_softmax(run.baseline.step_logits.float(), dim=-1)  # [K + 1, V]
    eng_logp = torch.log_softmax(run.engine_logits("accumulated"), dim=-1)
    hf_tokens = [int(t) for t in run.baseline.tokens]
    eng_tokens = [int(t) for t in eng_logp.argmax(dim=-1)]
    result = TokenDivergence(steps_checked=len(hf_tokens), step=None, position=None, hf_tokens=hf_tokens,
                             engine_tokens=eng_tokens)
    step = next((k for k, (a, b) in enumerate(zip(hf_tokens, eng_tokens)) if a != b), None)
    if step is None:
        return result
    h, e = hf_tokens[step], eng_tokens[step]
    result.step, result.position = step, run.prompt_len - 1 + step
    result.hf_token, result.engine_token = h, e
    result.hf_logprob, result.engine_logprob = float(hf_logp[step, h]), float(eng_logp[step, e])
    result.hf_logprob_of_engine_token = float(hf_logp[step, e])
    result.engine_logprob_of_hf_token = float(eng_logp[step, h])
    if decode is not None:
        result.hf_text, result.engine_text = decode([h]), decode([e])
    if step in run.baseline.captures:
        for mode in modes or list(run.engine_outputs):
            report = compare(run, step, mode, tolerances)
            result.reports.append(report)
            result.layers.append(layer_divergence(report, jump_factor=jump_factor))
    return result


@dataclass
class DivergenceResult:
    """First-divergence answers: per report the layer divergence, and the token divergence."""

    reports: list[DiffReport]
    layers: list[LayerDivergence]  # one per report, same order
    tokens: TokenDivergence

    @property
    def passed(self) -> bool:
        """True when every row of every report passed and no token diverged."""
        return (all(r.passed for r in self.reports) and not self.tokens.diverged
                and all(r.passed for r in self.tokens.reports))

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        return {"passed": self.passed, "reports": [r.to_dict() for r in self.reports],
                "layers": [x.to_dict() for x in self.layers], "tokens": self.tokens.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "DivergenceResult":
        """The inverse of `to_dict`."""
        return cls([DiffReport.from_dict(r) for r in d["reports"]], [LayerDivergence.from_dict(x) for x in d["layers"]],
                   TokenDivergence.from_dict(d["tokens"]))


def first_divergence(engine: Engine, layers: str | list[str] | None = None, *, modes=("accumulated",),
                     steps=(0,), search_steps: int = DEFAULT_SEARCH_STEPS, prompt: str | None = None,
                     token_ids: list[int] | None = None, tolerances: Tolerances | None = None,
                     baseline: Baseline | None = None, baseline_dtype: str | None = None,
                     jump_factor: float = DEFAULT_JUMP_FACTOR, decode: Callable[[list[int]], str] | None = None,
                     device: str = "cpu", backend: str = "torch") -> DivergenceResult:
    """Layer divergence of each (step, mode) report, and the first step (0..search_steps) whose token differs.

    HF decodes `max(search_steps, max(steps))` steps greedily; every step is captured, so
    the layer diffs at the token divergence step come from the same run. `backend`: as in `diff`.
    """
    if isinstance(modes, str):
        modes = (modes,)
    names, ids, baseline = prepare(engine, layers, prompt=prompt, token_ids=token_ids, tolerances=tolerances,
                                   baseline=baseline, baseline_dtype=baseline_dtype, device=device)
    if decode is None and token_ids is None:
        from workbench.inspect.baseline import load_tokenizer

        decode = load_tokenizer(engine, baseline.checkpoint).decode
    used_prompt = None if token_ids is not None else (prompt if prompt is not None else DEFAULT_PROMPT)
    steps = sorted(set(steps))
    last = max(search_steps, steps[-1])
    run = capture(engine, names, token_ids=ids, modes=modes, steps=list(range(last + 1)), baseline=baseline,
                  prompt=used_prompt, device=device, backend=backend)
    reports = [compare(run, s, m, tolerances) for s in steps for m in modes]
    divs = [layer_divergence(r, jump_factor=jump_factor) for r in reports]
    tokens = token_divergence(run, modes, tolerances, jump_factor=jump_factor, decode=decode)
    return DivergenceResult(reports, divs, tokens)
