"""What the TUI shows, with no Textual in it: one session (reports, tensors, profile) and where it came from.

Running over an engine and opening a saved session give the same thing, a `Workspace`
around a `Session`: the engine run is recorded in memory with its tensors (`record(run=...)`),
so every pane reads one data model and saving is `save_session`. `jobs.py` makes workspaces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.builder.engine import Engine
from workbench.errors import WorkbenchError
from workbench.inspect.baseline import Baseline
from workbench.inspect.diff import DiffReport
from workbench.inspect.divergence import LayerDivergence, layer_divergence
from workbench.inspect.profiler import ProfileReport
from workbench.inspect.session_file import Session, load_session
from workbench.inspect.tensor_view import TensorView, TokenStep, tensor_view, token_steps
from workbench.names import canonical_names

@dataclass
class Workspace:
    """One session and what the panes derive from it; `engine` is set when a model is loaded."""

    session: Session
    label: str  # what is open, for the title: "tiny-3d1d (float32)" or "tiny.wbs"
    all_names: list[str]  # every diffable name, marked or not, in layer order
    profile: ProfileReport | None = None
    engine: Engine | None = None
    baseline: Baseline | None = None  # the HF model, loaded once and kept for reruns
    session_path: Path | None = None
    decode: Callable[[list[int]], str] | None = None
    notes: list[str] = field(default_factory=list)
    reports: dict[tuple[str, int], DiffReport] = field(default_factory=dict)

    def __post_init__(self):
        if not self.reports:
            for d in self.session.reports:
                r = DiffReport.from_dict(d)
                self.reports[(r.mode, r.step)] = r
        self._views: dict[tuple[str, int, str], TensorView | None] = {}

    @property
    def names(self) -> list[str]:
        """The names diffed (marked), in layer order."""
        return list(self.session.names)

    @property
    def modes(self) -> list[str]:
        return sorted({m for m, _ in self.reports}, key=lambda m: (m != "accumulated", m))

    @property
    def steps(self) -> list[int]:
        return sorted({s for _, s in self.reports})

    @property
    def backend(self) -> str:
        """The backend the engine ran on (torch or cuda), as the session records it."""
        return self.session.backend

    @property
    def device(self) -> str | None:
        """The device the engine ran on, where the session records it."""
        return self.session.environment.get("device")

    @property
    def has_tensors(self) -> bool:
        return bool(self.session.tensors)

    def report(self, mode: str, step: int) -> DiffReport | None:
        return self.reports.get((mode, step))

    def divergence(self, mode: str, step: int) -> LayerDivergence | None:
        """The first failing name and the first error jump of one report."""
        report = self.report(mode, step)
        return layer_divergence(report) if report is not None else None

    def view(self, mode: str, step: int, name: str) -> TensorView | None:
        """Statistics, histogram and worst values of one name, when the session holds its tensors."""
        k = (mode, step, name)
        if k not in self._views:
            t = self.session.tensors or {}
            eng, ref = t.get(f"{mode}/{step}/{name}"), t.get(f"hf/{step}/{name}")
            self._views[k] = None if eng is None or ref is None else tensor_view(name, eng, ref)
        return self._views[k]

    def tokens(self) -> list[TokenStep]:
        """Each captured step's greedy choices on both sides (from the logits tensors, accumulated mode)."""
        t = self.session.tensors or {}
        hf = {s: t[f"hf/{s}/logits"] for s in self.steps if f"hf/{s}/logits" in t}
        eng = {s: t[f"accumulated/{s}/logits"] for s in self.steps if f"accumulated/{s}/logits" in t}
        return token_steps(hf, eng)

    @property
    def prompt_ids(self) -> list[int]:
        return list(self.session.token_ids)

    def text(self, ids: list[int]) -> str | None:
        """Decoded text, or None without a tokenizer."""
        return self.decode(ids) if self.decode is not None else None

    @staticmethod
    def phase_of(step: int) -> str:
        return "context" if step == 0 else "generation"

    def time_shares(self, phase: str) -> dict[str, float]:
        """Per canonical name, its own time's share of the phase; per layer group (`layers.3`), the layer's share."""
        if self.profile is None or phase not in self.profile.phases:
            return {}
        ph = self.profile.phases[phase]
        total = sum(r.own.median_ms for r in ph.names.values()) or 1.0
        shares = {name: r.own.median_ms / total for name, r in ph.names.items()}
        shares.update({f"group:{name}": r.share for name, r in ph.layers.items()})
        return shares


# -- opening a session -----------------------------------------------------------------------


def _names_of(session: Session) -> list[str]:
    num_layers = next((d.get("model", {}).get("num_layers") for d in session.reports), None)
    if not isinstance(num_layers, int):
        return list(session.names)
    every = canonical_names(num_layers)
    return every + [n for n in session.names if n not in every]


def open_session(path: str | Path) -> Workspace:
    """A saved session, with its tensors when it has them; no model is loaded."""
    path = Path(path)
    session = load_session(path)
    ws = Workspace(session=session, label=path.name, all_names=_names_of(session), session_path=path)
    if not session.reports:
        raise WorkbenchError(f"{path}: the session holds no reports")
    if not ws.has_tensors:
        ws.notes.append("this session holds no tensors: metrics only (rerun with r to capture them)")
    ws.profile = _profile_of(session, ws.notes)
    ws.decode = _decoder_for_session(session, path)
    return ws


def _profile_of(session: Session, notes: list[str]) -> ProfileReport | None:
    if not session.profile:
        notes.append("no timings recorded: the tree and timeline show no time")
        return None
    try:
        return ProfileReport.from_dict(session.profile)
    except (WorkbenchError, KeyError, TypeError) as e:
        notes.append(f"timings unreadable ({e})")
        return None


@functools.cache
def _decoder(directory: str) -> Callable[[list[int]], str] | None:
    from workbench.inspect.baseline import TOKENIZING_FILES

    if not any((Path(directory) / f).is_file() for f in TOKENIZING_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory).decode
    except (OSError, ValueError):
        return None


def _decoder_for_session(session: Session, path: Path) -> Callable[[list[int]], str] | None:
    src = session.model
    if src.get("source") == "checkpoint":
        ckpt = Path(src["path"]) if Path(src["path"]).is_absolute() else path.parent / src["path"]
        return _decoder(str(ckpt)) if ckpt.is_dir() else None
    if src.get("source") == "default":
        from workbench.default_model import NAME, cache_dir

        ckpt = cache_dir() / "checkpoints" / NAME
        return _decoder(str(ckpt)) if ckpt.is_dir() else None
    return None


def decoder_for_engine(engine: Engine) -> Callable[[list[int]], str] | None:
    for d in (engine.tokenizer_dir, engine.source.get("checkpoint")):
        if d and Path(d).is_dir():
            dec = _decoder(str(Path(d).absolute()))
            if dec is not None:
                return dec
    return None
