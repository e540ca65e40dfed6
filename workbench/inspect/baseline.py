"""The HF transformers model an engine was built from, with forward hooks on the modules behind canonical names.

`Baseline.run` feeds a prompt's token ids (the context phase, step 0) and then greedy
generation steps through HF's own KV cache, one token per step. At step k (k >= 1) the
input is the k-th greedy token, and the hooks capture the tensors of that one new token.
Captured tensors drop the batch dim: [S, ...] with S the prompt length at step 0, 1 after.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.builder.config import canonical_dtype
from workbench.builder.engine import Engine
from workbench.builder.models import family_of
from workbench.builder.models.base import HFCapture
from workbench.builder.models.checkpoint import read_config
from workbench.errors import WorkbenchError
from workbench.fsutil import sha256_file
from workbench.inspect.hf_model import engine_name_map, load_hf_model, source_checkpoint

# Tokenizer files whose content decides how text becomes ids (generation config and chat template do not).
TOKENIZING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                    "tokenizer.model", "added_tokens.json")


@dataclass
class BaselineRun:
    """What one HF run returns: the tokens it fed and chose, and per step the captured tensors."""

    prompt_ids: list[int]
    tokens: list[int]  # greedy choice at steps 0..K: tokens[k] is chosen from step k's logits
    step_logits: torch.Tensor  # [K + 1, V] float32: the last position's logits at each step
    captures: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # step -> name -> [S, ...]

    @property
    def num_steps(self) -> int:
        """Steps run after the context phase (K)."""
        return len(self.tokens) - 1

    @property
    def sequence(self) -> list[int]:
        """Every token fed: the prompt and the greedy tokens of steps 0..K-1."""
        return self.prompt_ids + self.tokens[:-1]

    def full(self, name: str) -> torch.Tensor:
        """`name` over the whole fed sequence, steps joined in order (needs every step captured)."""
        missing = [s for s in range(self.num_steps + 1) if name not in self.captures.get(s, {})]
        if missing:
            raise WorkbenchError(f"{name}: not captured at steps {missing}")
        return torch.cat([self.captures[s][name] for s in range(self.num_steps + 1)])


class Baseline:
    """An HF causal LM (eager attention, eval mode) and the hooks that read canonical names off it.

    The model loads on first use; `name_map` is the family's canonical name -> HFCapture table.
    """

    def __init__(self, checkpoint: str | Path, dtype: str = "float32", name_map: dict[str, HFCapture] | None = None,
                 device: str = "cpu"):
        self.checkpoint = Path(checkpoint)
        self.dtype = canonical_dtype(dtype)
        self.device = torch.device(device)
        if not (self.checkpoint / "config.json").is_file():
            raise WorkbenchError(f"{self.checkpoint}: the baseline checkpoint is gone (no config.json there)")
        if name_map is None:
            cfg = read_config(self.checkpoint)
            family = family_of(cfg, str(self.checkpoint / "config.json"))
            name_map = family.hf_name_map(family.LlamaConfig.from_hf(cfg, str(self.checkpoint / "config.json")))
        self.name_map = name_map
        self.warnings: list[str] = []  # softer mismatches with the engine, for the report
        self._model = None

    @classmethod
    def for_engine(cls, engine: Engine, checkpoint: str | Path | None = None, *, dtype: str | None = None,
                   device: str = "cpu") -> "Baseline":
        """The baseline of an engine: its source checkpoint (or `checkpoint`), checked to be the same model.

        `dtype` defaults to the engine's build dtype.
        """
        try:
            ckpt = source_checkpoint(engine, checkpoint)
        except WorkbenchError as e:  # the diff can take another checkpoint: say how
            hint = "pass the HF checkpoint directory as the baseline (wb diff --baseline DIR)"
            raise WorkbenchError(f"{e}; {hint}") from None
        name_map = engine_name_map(engine)
        warnings = check_same_model(engine, ckpt)
        baseline = cls(ckpt, canonical_dtype(dtype) if dtype else engine.build_config.dtype, name_map, device)
        baseline.warnings = warnings
        return baseline

    @property
    def model(self):
        """The HF model, loaded on first use."""
        if self._model is None:
            self._model = load_hf_model(self.checkpoint, self.dtype, self.device)
        return self._model

    def check_names(self, names: list[str]) -> None:
        """Raise WorkbenchError for a name the map lacks or whose HF module does not exist."""
        modules = dict(self.model.named_modules())
        for name in names:
            cap = self.name_map.get(name)
            if cap is None:
                raise WorkbenchError(f"{name}: no HF counterpart in the name map")
            for m in cap.modules:
                if m not in modules:
                    raise WorkbenchError(f"{name}: HF module {m!r} not found in {type(self.model).__name__}")

    @torch.inference_mode()
    def run(self, token_ids: list[int], names: list[str], *, steps: int = 0,
            capture_steps: list[int] | None = None) -> BaselineRun:
        """The context phase over `token_ids`, then `steps` greedy steps through HF's KV cache.

        Captures `names` at each step in `capture_steps` (default: every step 0..steps). An end
        of sequence token does not stop it: the engine is compared over the same steps.
        """
        if not token_ids:
            raise WorkbenchError("baseline: the prompt has no tokens")
        vocab = self.model.config.vocab_size
        bad = [t for t in token_ids if not 0 <= int(t) < vocab]
        if bad:
            raise WorkbenchError(f"baseline: token id {bad[0]} is outside the model's vocabulary of {vocab}")
        self.check_names(names)
        wanted = set(range(steps + 1) if capture_steps is None else capture_steps)
        hooks = _Hooks(self.model, self.name_map, names)
        ids = torch.tensor([list(token_ids)], dtype=torch.int64, device=self.device)
        result = BaselineRun(prompt_ids=[int(t) for t in token_ids], tokens=[], step_logits=torch.empty(0))
        logits_rows = []
        from transformers import DynamicCache

        cache_kw = _cache_kwarg(self.model)
        cache = DynamicCache(config=self.model.config)
        try:
            for step in range(steps + 1):
                hooks.active = step in wanted
                out = self.model(input_ids=ids, use_cache=True, **{cache_kw: cache})
                last = out.logits[0, -1].float().cpu()
                logits_rows.append(last)
                token = int(torch.argmax(last))
                result.tokens.append(token)
                if hooks.active:
                    result.captures[step] = hooks.collect()
                ids = torch.tensor([[token]], dtype=torch.int64, device=self.device)
        finally:
            hooks.remove()
        result.step_logits = torch.stack(logits_rows)
        return result


class _Hooks:
    """Forward hooks on the modules behind the wanted names; `collect` assembles one step's tensors."""

    def __init__(self, model, name_map: dict[str, HFCapture], names: list[str]):
        self.caps = {n: name_map[n] for n in names}
        self.seen: dict[tuple[str, str], torch.Tensor] = {}
        self.active = True
        self.handles = []
        modules = dict(model.named_modules())
        wanted = {(m, "input" if c.how == "input" else "output") for c in self.caps.values() for m in c.modules}
        for path, kind in sorted(wanted):
            if kind == "input":
                self.handles.append(modules[path].register_forward_pre_hook(self._pre_hook(path)))
            else:
                self.handles.append(modules[path].register_forward_hook(self._hook(path)))

    def _pre_hook(self, path: str):
        def hook(module, args):
            if self.active:
                self.seen[(path, "input")] = _first(args).detach()

        return hook

    def _hook(self, path: str):
        def hook(module, args, output):
            if self.active:
                self.seen[(path, "output")] = _first(output).detach()

        return hook

    def collect(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, cap in self.caps.items():
            if cap.how == "concat_outputs":
                t = torch.cat([self.seen[(m, "output")] for m in cap.modules], dim=-1)
            elif cap.how in ("output", "input"):
                t = self.seen[(cap.modules[0], cap.how)]
            else:
                raise WorkbenchError(f"{name}: unknown HF capture kind {cap.how!r}")
            out[name] = t[0].to("cpu").clone()  # drop the batch dim: [S, ...]
        self.seen.clear()
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@functools.lru_cache(maxsize=8)
def _tokenizer(directory: str, stamp: tuple):
    """AutoTokenizer of a directory, kept while its files are unchanged (`stamp`): loading takes a second."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise WorkbenchError(f"{directory}: cannot load the tokenizer ({e})") from None


def _cache_kwarg(model) -> str:
    """The name of the KV-cache argument: `cache` in recent transformers, `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _first(x) -> torch.Tensor:
    """A module's tensor: itself, or the first element of a tuple/list (as HF attention returns)."""
    while isinstance(x, (tuple, list)):
        x = x[0]
    if hasattr(x, "last_hidden_state"):
        x = x.last_hidden_state
    if not isinstance(x, torch.Tensor):
        raise WorkbenchError(f"hooked module returned {type(x).__name__}, not a tensor")
    return x


def check_same_model(engine: Engine, checkpoint: Path) -> list[str]:
    """Raise WorkbenchError when `checkpoint` is not the model the engine was built from.

    Compares the family config derived from the checkpoint's config.json with the engine's
    model config. Returns warnings for softer mismatches (config.json edited since the build).
    """
    cfg = read_config(checkpoint)
    source = str(checkpoint / "config.json")
    family = family_of(cfg, source)
    theirs = family.LlamaConfig.from_hf(cfg, source).to_dict()
    ours = engine.model_config
    diffs = [f"{k} {ours.get(k)!r} (engine) vs {theirs.get(k)!r} (checkpoint)"
             for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
    if diffs:
        raise WorkbenchError(f"{checkpoint}: not the model the engine {engine.path or ''} was built from: "
                             + "; ".join(diffs[:4]) + (f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""))
    warnings = []
    sha = sha256_file(checkpoint / "config.json")
    recorded = engine.source.get("config_sha256")
    if recorded and sha != recorded:
        warnings.append(f"{source} changed since the engine was built (sha256 {sha[:12]}... vs {recorded[:12]}...); "
                        "the model config still matches")
    return warnings


def check_tokenizer(engine: Engine, checkpoint: Path, tokenizer) -> None:
    """Raise WorkbenchError when the engine's tokenizer does not belong to the checkpoint's model."""
    vocab = int(engine.model_config.get("vocab_size", 0))
    if vocab and len(tokenizer) > vocab:
        raise WorkbenchError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab}: "
                             f"the engine's tokenizer is not this model's")
    tok_dir = engine.tokenizer_dir
    if tok_dir is None:
        return
    for fname in TOKENIZING_FILES:
        ours, theirs = tok_dir / fname, checkpoint / fname
        if ours.is_file() and theirs.is_file() and ours.read_bytes() != theirs.read_bytes():
            raise WorkbenchError(f"{ours}: differs from the checkpoint's {theirs}; the engine's tokenizer is not "
                                 "the baseline's (rebuild the engine, or pass token ids)")


def load_tokenizer(engine: Engine, checkpoint: Path | None = None):
    """The engine's tokenizer (AutoTokenizer), else the checkpoint's; WorkbenchError when neither has one."""
    for d in (engine.tokenizer_dir, checkpoint):
        if d is not None and Path(d).is_dir() and any((Path(d) / f).is_file() for f in TOKENIZING_FILES):
            stamp = tuple((Path(d) / f).stat().st_mtime_ns for f in TOKENIZING_FILES if (Path(d) / f).is_file())
            return _tokenizer(str(Path(d).absolute()), stamp)
    raise WorkbenchError(f"{engine.path}: the engine has no tokenizer files and neither has its checkpoint; "
                         "pass token ids instead of a prompt")
