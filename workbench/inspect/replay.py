"""Record a diff as a session, and replay sessions: rebuild, rerun, compare with what was recorded."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.builder.config import BuildConfig
from workbench.builder.engine import Engine
from workbench.errors import WorkbenchError
from workbench.inspect.diff import DiffReport, DiffRun, diff
from workbench.inspect.session_file import Session, environment, key, load_session, save_session
from workbench.inspect.tolerances import Tolerances
from workbench.runtime.backends import resolve_device

# statuses of one (mode, step, name) in a replay
PASS, EXPECTED_FAIL, REGRESSION, FIXED, NOT_COMPARED = "pass", "expected-fail", "regression", "fixed", "not-compared"
MOVED_FACTOR = 2.0  # a metric that changes by more than this factor is reported as moved
_FLOOR = 1e-9  # errors below this are "zero" when judging movement


def model_source_of(engine: Engine) -> dict:
    """How a session names the engine's model: the default model, or its checkpoint directory."""
    from workbench.default_model import NAME, cache_dir

    ckpt = Path(engine.source.get("checkpoint", ""))
    if ckpt.name == NAME and ckpt.parent == cache_dir() / "checkpoints":
        return {"source": "default"}
    return {"source": "checkpoint", "path": str(ckpt)}


def record(engine: Engine, reports: list[DiffReport], *, model: dict | None = None, run: DiffRun | None = None,
           device: str = "cpu", profile: dict | None = None, title: str = "") -> Session:
    """A session from the reports of one diff; with `run`, the compared tensors are kept too."""
    if not reports:
        raise WorkbenchError("nothing to record: the diff produced no reports")
    first = reports[0]
    expected = {key(r.mode, r.step): [row.name for row in r.failures] for r in reports}
    tensors = None
    if run is not None:
        tensors = {}
        for r in reports:
            rows = torch.tensor(r.positions)
            for name in r.names:
                tensors[f"{r.mode}/{r.step}/{name}"] = run.engine_outputs[r.mode][name][rows].clone()
                tensors[f"hf/{r.step}/{name}"] = run.baseline.captures[r.step][name].clone()
    return Session(
        model=model or model_source_of(engine), build=engine.build_config.to_dict(),
        token_ids=_prompt_ids(reports), names=list(first.names), modes=sorted({r.mode for r in reports}),
        steps=sorted({r.step for r in reports}), tolerances=first.tolerances, reports=[r.to_dict() for r in reports],
        expected_failures=expected, prompt=first.prompt, environment={**environment(device), **first.engine},
        profile=profile, title=title, tensors=tensors, backend=first.engine.get("backend", "torch"))


def _prompt_ids(reports: list[DiffReport]) -> list[int]:
    context = [r for r in reports if r.step == 0]
    if context:
        return list(context[0].token_ids)
    r = reports[0]  # a generation step k holds the prompt and k tokens, the last of which it feeds
    return list(r.token_ids[: len(r.token_ids) - r.step])


def checkpoint_for(session: Session, session_path: Path) -> Path:
    """The checkpoint directory a session's model source names (made or converted on first use)."""
    src = session.model
    if src["source"] == "default":
        from workbench.default_model import default_checkpoint

        return default_checkpoint()
    if src["source"] == "tiny":
        from workbench.inspect.tiny_models import tiny_checkpoint, validate_spec

        validate_spec(src["spec"], f"{session_path}: model.spec")
        return tiny_checkpoint(src["spec"])
    path = Path(src["path"])
    if not path.is_absolute():
        path = session_path.parent / path
    if not (path / "config.json").is_file():
        raise WorkbenchError(f"{session_path}: model checkpoint {path} is not there (no config.json)")
    return path


@dataclass
class Outcome:
    """One (mode, step, name) of a replay."""

    mode: str
    step: int
    name: str
    status: str
    reason: str = ""
    moved: list[str] = field(default_factory=list)  # "rel_l2 3.1e-07 -> 2.4e-02"

    def to_dict(self) -> dict:
        """JSON form."""
        return {"mode": self.mode, "step": self.step, "name": self.name, "status": self.status,
                "reason": self.reason, "moved": list(self.moved)}


@dataclass
class ReplayResult:
    """What replaying one session found."""

    path: str
    title: str
    outcomes: list[Outcome]
    notes: list[str]  # what could not be compared, and why
    reports: list[DiffReport]
    seconds: float = 0.0

    @property
    def regressions(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == REGRESSION]

    @property
    def passed(self) -> bool:
        """No regression (an expected failure that still fails is fine)."""
        return not self.regressions

    @property
    def moved(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.moved]

    def to_dict(self) -> dict:
        """JSON form."""
        return {"path": self.path, "title": self.title, "passed": self.passed, "seconds": round(self.seconds, 3),
                "notes": list(self.notes), "outcomes": [o.to_dict() for o in self.outcomes]}


def replay(path: str | Path, *, device: str | None = None, backend: str | None = None, update: bool = False,
           progress: Callable[[str], None] | None = None) -> ReplayResult:
    """Rebuild and rerun a session, compare with the recorded results; with `update`, record the new ones.

    It replays on the recorded backend (`backend` overrides it); a session recorded with the cuda
    backend replays with the torch one, with a note, where this machine cannot run cuda.
    """
    import time

    t0 = time.perf_counter()
    path = Path(path)
    session = load_session(path, with_tensors=False)
    asked = backend
    device, backend, notes = _placement(session, device, backend)
    if update and asked is None and backend != session.backend:
        raise WorkbenchError(f"{path}: --update would record {backend}-backend results over a session recorded with "
                             f"the {session.backend} backend; update it where that backend runs, or pass --backend "
                             f"{backend} to change it on purpose")
    say = progress or (lambda msg: None)
    say("preparing the model")
    checkpoint = checkpoint_for(session, path)
    from workbench.engine_cache import cached_engine

    try:
        config = BuildConfig.from_dict(session.build)
    except TypeError as e:
        raise WorkbenchError(f"{path}: build config does not fit this workbench ({e})") from None
    say("building the engine")
    engine = cached_engine(checkpoint, config)
    say("running the diff")
    tolerances = Tolerances.from_dict(session.tolerances)
    baseline_dtype = (session.reports[0].get("model") or {}).get("dtype") if session.reports else None
    reports = diff(engine, session.names, modes=tuple(session.modes), steps=tuple(session.steps),
                   token_ids=session.token_ids, tolerances=tolerances, baseline_dtype=baseline_dtype, device=device,
                   backend=backend)
    outcomes = compare_reports(session, reports)
    if update:
        new = record(engine, reports, model=session.model, device=device, profile=session.profile, title=session.title)
        new.prompt = session.prompt
        save_session(new, path)
        notes.append(f"updated {path.name} with the new results")
    return ReplayResult(str(path), session.title, outcomes, notes, reports, time.perf_counter() - t0)


def compare_reports(session: Session, reports: list[DiffReport]) -> list[Outcome]:
    """Each new row against the recorded expectation and metrics."""
    recorded = {(r["mode"], int(r["step"])): {row["name"]: row for row in r["rows"]} for r in session.reports}
    outcomes = []
    for report in reports:
        expected_fail = set(session.expected_failures.get(key(report.mode, report.step), []))
        old_rows = recorded.get((report.mode, report.step), {})
        for row in report.rows:
            old = old_rows.get(row.name)
            if old is None:
                outcomes.append(Outcome(report.mode, report.step, row.name, NOT_COMPARED, "not in the recording"))
                continue
            moved = _moved(old["metrics"], row.metrics.to_dict())
            if row.passed:
                status = FIXED if row.name in expected_fail else PASS
            else:
                status = EXPECTED_FAIL if row.name in expected_fail else REGRESSION
            outcomes.append(Outcome(report.mode, report.step, row.name, status,
                                    "" if row.passed else row.verdict.reason, moved))
    return outcomes


def _num(x) -> float:
    if isinstance(x, str):
        return float(x)
    return float(x) if x is not None else float("nan")


def _moved(old: dict, new: dict) -> list[str]:
    out = []
    for stat in ("max_abs_err", "rel_l2"):
        a, b = _num(old.get(stat)), _num(new.get(stat))
        if math.isnan(a) or math.isnan(b):
            if not (math.isnan(a) and math.isnan(b)):
                out.append(f"{stat} {a:.3g} -> {b:.3g}")
            continue
        lo, hi = sorted((max(a, _FLOOR), max(b, _FLOOR)))
        if hi / lo > MOVED_FACTOR:
            out.append(f"{stat} {a:.3g} -> {b:.3g}")
    return out


def _placement(session: Session, device: str | None, backend: str | None) -> tuple[str, str, list[str]]:
    """(device, backend, notes): the recorded backend and device where this machine has them, unless asked."""
    env = session.environment
    rec_device = env.get("device", "cpu")
    asked = backend is not None
    backend = backend or session.backend
    if device is None:
        on_gpu = rec_device.startswith("cuda") or backend == "cuda"
        device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
    notes = []
    if backend == "cuda" and not asked:
        try:
            resolve_device(backend, device)
        except WorkbenchError:
            notes.append(f"recorded with the cuda backend, which cannot run on {device} here (no CUDA GPU; "
                         "TRITON_INTERPRET=1 runs its kernels in Triton's CPU interpreter): replayed with the torch "
                         "backend, so differences specific to the cuda kernels are not reproduced")
            backend = "torch"
    device = resolve_device(backend, device)  # an explicit --backend / --device that cannot run here fails
    if rec_device.startswith("cuda") and not device.startswith("cuda"):
        name = env.get("device_name", "a GPU")
        notes.append(f"recorded on {rec_device} ({name}) with the {session.backend} backend; replayed on "
                     f"{device} with the {backend} backend: differences specific to GPU kernels are not reproduced, "
                     "everything else is compared under the recorded tolerances")
    if session.profile:
        notes.append("timings were recorded for reference and are not compared (they are not a correctness signal)")
    return device, backend, notes


def junit_xml(results: list[ReplayResult]) -> str:
    """A JUnit XML document: one test suite per session, one test case per (mode, step, name)."""
    from xml.sax.saxutils import quoteattr

    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<testsuites>"]
    for r in results:
        fails = len(r.regressions)
        skipped = sum(o.status == NOT_COMPARED for o in r.outcomes)
        lines.append(f"  <testsuite name={quoteattr(r.title or Path(r.path).name)} tests=\"{len(r.outcomes)}\" "
                     f"failures=\"{fails}\" skipped=\"{skipped}\" time=\"{r.seconds:.3f}\">")
        for o in r.outcomes:
            case = f"    <testcase classname={quoteattr(Path(r.path).name + '.' + o.mode + '.step' + str(o.step))} " \
                   f"name={quoteattr(o.name)}"
            if o.status == REGRESSION:
                lines.append(case + ">")
                lines.append(f"      <failure message={quoteattr(o.reason)}>{'; '.join(o.moved)}</failure>")
                lines.append("    </testcase>")
            elif o.status == NOT_COMPARED:
                lines.append(case + f"><skipped message={quoteattr(o.reason)}/></testcase>")
            else:
                lines.append(case + "/>")
        lines.append("  </testsuite>")
    lines.append("</testsuites>")
    return "\n".join(lines) + "\n"
