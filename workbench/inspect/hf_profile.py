"""The HF baseline's timings under canonical names: pre- and post-forward hooks on the modules behind each name.

The modules come from the family's `hf_name_map`. Names HF computes inside a module
rather than as one (`layers.i.attn.core`, the input of `o_proj`) have no time of their
own here; `layers.i.attn.qkv` is the sum of q_proj, k_proj and v_proj. The phases mirror
the engine's: a prompt forward, then decode steps through HF's own cache, each timed once
without hooks (end to end) and once with them.
"""

from __future__ import annotations

import inspect

import torch

from workbench.builder.engine import Engine
from workbench.errors import WorkbenchError
from workbench.inspect.hf_model import ATTN_IMPLEMENTATION, engine_name_map, load_hf_model, source_checkpoint
from workbench.inspect.profile_clock import Clock, NodeTimer, quiet_timing
from workbench.inspect.profile_report import BaselineProfile, ProfileConfig, ProfileReport, Row, Span, Stat
from workbench.inspect.profiler import token_ids
from workbench.runtime.nvtx import layer_group


def engine_hf_model(engine: Engine, device: torch.device):
    """The HF model the engine was built from (its recorded checkpoint), in the engine's dtype, on `device`."""
    return load_hf_model(source_checkpoint(engine), engine.build_config.dtype, device)


def timed_modules(engine: Engine, model) -> dict[str, tuple[str, ...]]:
    """Canonical name -> the HF module paths whose forward time is that name's time."""
    modules = dict(model.named_modules())
    out = {}
    for name, cap in engine_name_map(engine).items():
        if cap.how not in ("output", "concat_outputs"):
            continue
        missing = [m for m in cap.modules if m not in modules]
        if missing:
            raise WorkbenchError(f"{name}: HF module {missing[0]!r} not found in {type(model).__name__}")
        out[name] = cap.modules
    return out


class _ModuleTimer(NodeTimer):
    """Hooks that mark the start and end of every timed module's forward (read like the engine's node timer)."""

    def __init__(self, model, names: dict[str, tuple[str, ...]], clock: Clock):
        super().__init__(clock)
        self.model = model
        self.names = names
        self._open: dict[str, object] = {}
        self._handles = []

    def __enter__(self):
        modules = dict(self.model.named_modules())
        for name, paths in self.names.items():
            for path in paths:
                mod = modules[path]
                self._handles.append(mod.register_forward_pre_hook(self._pre(path)))
                self._handles.append(mod.register_forward_hook(self._post(name, path)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._open.clear()

    def _pre(self, path: str):
        def hook(module, args):
            self._open[path] = self.clock.mark()

        return hook

    def _post(self, name: str, path: str):
        def hook(module, args, output):
            self.marks.append((name, self._open.pop(path), self.clock.mark()))

        return hook


def _cache_kw(model) -> str:
    """The keyword HF's forward takes the KV cache by (`cache` in transformers 5, `past_key_values` before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def _drop_last(cache, n: int) -> None:
    """Remove the last n tokens from an HF DynamicCache."""
    target = cache.get_seq_length() - n
    try:
        cache.crop(-n)
    except ValueError:
        cache.crop(target)
    if cache.get_seq_length() != target:
        raise WorkbenchError("HF baseline: cannot rewind the HF cache for a repeated decode step")


@torch.inference_mode()
def profile_baseline(engine: Engine, config: ProfileConfig, ids: torch.Tensor, *, device: torch.device,
                     clock: Clock, model=None) -> dict[str, BaselineProfile]:
    """Time the HF model per canonical name over the same tokens [B, P + N] as the engine's profile."""
    model = model if model is not None else engine_hf_model(engine, device)
    names = timed_modules(engine, model)
    kw = _cache_kw(model)
    p = config.prompt_len
    prompt = ids[:, :p].to(device)
    decode = [ids[:, p + s: p + s + 1].to(device) for s in range(config.steps)]
    results: dict[str, BaselineProfile] = {}

    def timed(run, step: int, repeat: int, acc: dict):
        clock.sync()
        clock.recycle()
        a = clock.mark()
        out = run()
        b = clock.mark()
        clock.sync()
        acc["step_ms"].append(clock.ms(b) - clock.ms(a))
        return out

    def hooked(run, step: int, repeat: int, acc: dict):
        clock.sync()
        clock.recycle()
        with _ModuleTimer(model, names, clock) as timer:
            a = clock.mark()
            out = run()
            b = clock.mark()
            clock.sync()
            marks = timer.read()
        sums: dict[str, float] = {}
        for name, s, e in marks:
            sums[name] = sums.get(name, 0.0) + (e - s)
            acc["spans"].append(Span(name, step, repeat, s * 1e3, (e - s) * 1e3))
        for name, v in sums.items():
            acc["names"].setdefault(name, []).append(v)
        t0, t1 = clock.ms(a), clock.ms(b)
        acc["step_spans"].append(Span(f"step {step}", step, repeat, t0 * 1e3, (t1 - t0) * 1e3))
        return out

    def prefill():
        return model(input_ids=prompt, use_cache=True)

    for _ in range(config.warmup):
        cache = _out_cache(prefill())
        for tok in decode:
            model(input_ids=tok, use_cache=True, **{kw: cache})
    if "context" in config.phases:
        acc = {"step_ms": [], "names": {}, "spans": [], "step_spans": []}
        for r in range(config.repeats):
            timed(prefill, 0, r, acc)
            hooked(prefill, 0, r, acc)
        results["context"] = _baseline(acc)
    if "generation" in config.phases:
        acc = {"step_ms": [], "names": {}, "spans": [], "step_spans": []}
        for r in range(config.repeats):
            cache = _out_cache(prefill())
            for s, tok in enumerate(decode):
                step = lambda: model(input_ids=tok, use_cache=True, **{kw: cache})  # noqa: E731
                timed(step, s, r, acc)
                _drop_last(cache, 1)
                hooked(step, s, r, acc)
        results["generation"] = _baseline(acc)
    return results


def _baseline(acc: dict) -> BaselineProfile:
    rows = {name: Row(name, Stat.of(v), 0.0) for name, v in acc["names"].items()}
    layers = [r for n, r in rows.items() if layer_group(n) == n]  # embed, layers.i, final_norm, logits
    total = sum(r.time.median_ms for r in layers)
    for r in rows.values():
        r.share = r.time.median_ms / total if total > 0 else 0.0
    return BaselineProfile(step_time=Stat.of(acc["step_ms"]), names=rows, spans=acc["spans"],
                           step_spans=acc["step_spans"], attn_implementation=ATTN_IMPLEMENTATION)


def add_baseline(report: ProfileReport, engine: Engine, *, clock: Clock | None = None, model=None) -> ProfileReport:
    """Time the HF model over the report's own settings and tokens and attach it to each phase (in place)."""
    device = torch.device(report.device)
    config = report.config
    model = model if model is not None else engine_hf_model(engine, device)
    ids = token_ids(config, int(engine.model_config.get("vocab_size", 2)))
    with quiet_timing(config.threads):
        base = profile_baseline(engine, config, ids, device=device, clock=clock or Clock(device), model=model)
    for phase, b in base.items():
        report.phases[phase].baseline = b
    config.baseline = True
    return report
