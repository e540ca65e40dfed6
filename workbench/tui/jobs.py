"""The slow work of the TUI, for a worker thread: load or build a model, diff and profile it, rerun, save.

Every function reports progress through a `(stage, done, total)` callback and touches no UI;
each returns a new `Workspace` (or the path written). The engine runs on one backend (torch, the
reference, or cuda, the fast path; see runtime.backends), the same for the diff and the profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.builder.config import BuildConfig
from workbench.builder.engine import MANIFEST, Engine, load_engine
from workbench.errors import WorkbenchError
from workbench.inspect.baseline import Baseline
from workbench.inspect.diff import capture, compare, diffable_names, select_names
from workbench.inspect.profiler import ProfileConfig, ProfileReport, profile_engine
from workbench.inspect.replay import checkpoint_for, model_source_of, record
from workbench.inspect.session_file import save_session
from workbench.inspect.tolerances import Tolerances
from workbench.names import match
from workbench.runtime.backends import resolve_device
from workbench.tui.workspace import Workspace, decoder_for_engine, open_session

Progress = Callable[[str, int, int], None]
RUN_STAGES = ("marking outputs", "running HF and the engine", "comparing", "profiling", "recording")


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def load_model(model: str | None, dtype: str = "fp32", progress: Progress = _quiet) -> Engine:
    """An engine for `wb tui MODEL`: an engine dir, a checkpoint dir (built and cached), or None (the default model)."""
    from workbench.engine_cache import cached_engine

    if model is None:
        from workbench.default_model import default_checkpoint

        progress("preparing the default model", 0, 1)
        checkpoint = default_checkpoint()
    else:
        path = Path(model)
        if (path / MANIFEST).is_file():
            progress("loading the engine", 0, 1)
            return load_engine(path)
        if not (path / "config.json").is_file():
            raise WorkbenchError(f"{model}: neither an engine directory ({MANIFEST}), a checkpoint directory "
                                 "(config.json) nor a session file (.wbs)")
        checkpoint = path
    return cached_engine(checkpoint, BuildConfig(dtype=dtype), lambda stage, done, total: progress(
        f"building: {stage}", done, total))


def default_tokens(engine: Engine) -> list[int]:
    """The default prompt's ids, or a fixed id sequence for an engine without a tokenizer."""
    from workbench.inspect.diff import DEFAULT_PROMPT, tokenize

    try:
        return tokenize(engine, DEFAULT_PROMPT)
    except WorkbenchError:  # no tokenizer (the tiny test models): eight fixed ids
        vocab = int(engine.model_config.get("vocab_size", 2))
        return [(7 * i + 1) % vocab for i in range(8)]


def run_engine(engine: Engine, patterns: list[str] | None = None, *, steps=(0, 1, 2, 3, 4),
               modes=("accumulated", "local"), token_ids: list[int] | None = None, prompt: str | None = None,
               tolerances: Tolerances | None = None, profile: ProfileConfig | None = None,
               model: dict | None = None, label: str | None = None, baseline: Baseline | None = None,
               baseline_dtype: str | None = None, backend: str = "torch", device: str = "cpu",
               progress: Progress = _quiet) -> Workspace:
    """Diff the engine at every step and mode, profile it, and record it all (with tensors) as a workspace.

    `backend` and `device` (checked by runtime.backends.resolve_device) run both the diff and the profile.
    """
    pairs = [(s, m) for s in sorted(set(steps)) for m in modes]
    total = len(RUN_STAGES) - 1 + len(pairs)  # comparing counts once per report
    tolerances = tolerances or Tolerances()
    progress(RUN_STAGES[0], 0, total)
    names = select_names(engine, patterns)
    if "logits" not in names:  # the tokens tab reads the logits
        names = select_names(engine, names + ["logits"])
    if token_ids is None:
        token_ids = default_tokens(engine) if prompt is None else _tokenize(engine, prompt)
    from workbench.builder.build import debug_engine

    debug_engine(engine, names)  # rebuilt and cached here, so the next stage only runs
    progress(RUN_STAGES[1], 1, total)
    baseline = baseline or Baseline.for_engine(engine, dtype=baseline_dtype)
    run = capture(engine, names, token_ids=token_ids, modes=tuple(modes), steps=tuple(steps), prompt=prompt,
                  baseline=baseline, device=device, backend=backend)
    reports = []
    for i, (s, m) in enumerate(pairs):
        progress(f"{RUN_STAGES[2]}: {m}, step {s}", 2 + i, total)
        reports.append(compare(run, s, m, tolerances))
    progress(RUN_STAGES[3], total - 2, total)
    notes = [f"warning: {w}" for w in baseline.warnings]
    report = None
    if profile is not None:
        try:
            report = profile_on(engine, profile, backend, device)
        except WorkbenchError as e:
            notes.append(f"no timings on the {backend} backend: {e}")
    progress(RUN_STAGES[4], total - 1, total)
    session = record(engine, reports, model=model or model_source_of(engine), run=run, device=device,
                     profile=report.to_dict() if report else None)
    label = label or f"{Path(str(engine.path or engine.source.get('checkpoint', 'engine'))).name} " \
                     f"({engine.build_config.dtype})"
    ws = Workspace(session=session, label=label, all_names=diffable_names(engine), profile=report, engine=engine,
                   baseline=baseline, decode=decoder_for_engine(engine), notes=notes,
                   reports={(r.mode, r.step): r for r in reports})
    progress("done", total, total)
    return ws


def _tokenize(engine: Engine, prompt: str) -> list[int]:
    from workbench.inspect.diff import tokenize

    return tokenize(engine, prompt)


def profile_on(engine: Engine, config: ProfileConfig, backend: str, device: str) -> ProfileReport:
    """Time the engine on `backend`: node by node (torch), or the compiled program statement by statement (cuda)."""
    if backend == "cuda":
        from workbench.inspect.cuda_profile import profile_cuda

        return profile_cuda(engine, config, device=device)
    return profile_engine(engine, config, device=device)


def profile_config(engine: Engine, prompt_len: int, repeats: int = 3) -> ProfileConfig:
    """A short profile: the prompt's length, a few decode steps, a few repeats."""
    steps = max(1, min(4, engine.build_config.max_seq_len - prompt_len))
    return ProfileConfig(prompt_len=prompt_len, steps=steps, repeats=repeats, warmup=1, nvtx="off")


def rerun(ws: Workspace, extra: list[str] | None = None, *, with_profile: bool = True, backend: str = "torch",
          device: str = "cpu", progress: Progress = _quiet) -> Workspace:
    """Rebuild with `extra` names marked too and rerun the same tokens, steps, modes and tolerances on `backend`."""
    engine = ws.engine
    if engine is None:
        if ws.session_path is None:
            raise WorkbenchError("nothing to rerun: no engine and no session file")
        from workbench.engine_cache import cached_engine

        progress("preparing the model", 0, 1)
        checkpoint = checkpoint_for(ws.session, ws.session_path)
        engine = cached_engine(checkpoint, BuildConfig.from_dict(ws.session.build),
                               lambda stage, done, total: progress(f"building: {stage}", done, total))
    names = list(ws.names)
    if extra:
        names += match(extra, diffable_names(engine))
    prompt_len = len(ws.session.token_ids)
    new = run_engine(engine, names, steps=tuple(ws.steps), modes=tuple(ws.modes), token_ids=ws.prompt_ids,
                     prompt=ws.session.prompt, tolerances=Tolerances.from_dict(ws.session.tolerances),
                     profile=profile_config(engine, prompt_len) if with_profile else None, model=ws.session.model,
                     label=ws.label, baseline=ws.baseline if engine is ws.engine else None,
                     baseline_dtype=next(iter(ws.reports.values())).model.get("dtype"), backend=backend, device=device,
                     progress=progress)
    new.session.title = ws.session.title
    new.session_path = ws.session_path
    return new


def save(ws: Workspace, path: str | Path) -> Path:
    """Write the workspace's session (with its tensors) to `path` (.wbs)."""
    path = save_session(ws.session, path)
    ws.session_path = Path(path)
    return Path(path)


@dataclass
class Target:
    """What `wb tui` opens: a session file, or a model (engine dir, checkpoint dir, None = default) to run."""

    session: Path | None = None
    model: str | None = None
    dtype: str = "fp32"
    patterns: list[str] | None = None
    steps: tuple[int, ...] = (0, 1, 2, 3, 4)
    modes: tuple[str, ...] = ("accumulated", "local")
    prompt: str | None = None
    tolerances: Tolerances | None = None
    profile: bool = True
    repeats: int = 3
    baseline_dtype: str | None = None  # the HF model's dtype; default: the engine's
    backend: str | None = None  # the engine's executor; None: torch for a model, a session's own for a session
    device: str | None = None  # None: the backend's default (resolve_device)

    def describe(self) -> str:
        if self.session is not None:
            return f"opening {Path(self.session).name}"
        return f"running {Path(self.model).name if self.model else 'the default model'} on the " \
               f"{self.backend or 'torch'} backend"

    def load(self, progress: Progress = _quiet) -> Workspace:
        """Open the session, or load (building if needed), diff and profile the model."""
        if self.session is not None:
            progress("reading the session", 0, 1)
            return open_session(self.session)
        backend = self.backend or "torch"
        device = resolve_device(backend, self.device)  # before any model loads: a backend that cannot run fails
        engine = load_model(self.model, self.dtype, progress)
        token_ids = default_tokens(engine) if self.prompt is None else _tokenize(engine, self.prompt)
        config = profile_config(engine, len(token_ids), self.repeats) if self.profile else None
        from workbench.default_model import NAME

        label = f"{Path(self.model).name if self.model else NAME} ({engine.build_config.dtype})"
        return run_engine(engine, self.patterns, steps=self.steps, modes=self.modes, token_ids=token_ids,
                          prompt=self.prompt, tolerances=self.tolerances, profile=config, label=label,
                          baseline_dtype=self.baseline_dtype, backend=backend, device=device, progress=progress)
