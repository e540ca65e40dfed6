"""The session file: a versioned JSON manifest (`NAME.wbs`) and, optionally, captured tensors beside it.

The manifest records how to reproduce a diff (model source, build config, tokens, names,
modes, steps, tolerances), what it measured (the reports), what is expected to fail, and
where it ran. A sha256 over the manifest's content catches hand edits and truncation.
Captured tensors go to `NAME.wbs.safetensors`, named in the manifest by a bare file
name, so a session can never point reads or writes outside its own directory.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_write, read_json, sha256_file
from workbench.runtime.backends import BACKEND_NAMES

FORMAT = "workbench-session"
FORMAT_VERSION = 1
SUFFIX = ".wbs"
MODEL_SOURCES = ("default", "checkpoint", "tiny")


class SessionFileError(WorkbenchError):
    """A session file that is missing, corrupt, edited by hand, or of another format version."""


@dataclass
class Session:
    """A recorded debugging session."""

    model: dict  # {"source": "default"} | {"source": "checkpoint", "path": ...} | {"source": "tiny", "spec": {...}}
    build: dict  # BuildConfig.to_dict()
    token_ids: list[int]
    names: list[str]
    modes: list[str]
    steps: list[int]
    tolerances: dict
    reports: list[dict]  # DiffReport.to_dict(), one per (step, mode)
    expected_failures: dict[str, list[str]] = field(default_factory=dict)  # "mode/step" -> names
    prompt: str | None = None
    environment: dict = field(default_factory=dict)
    profile: dict | None = None  # ProfileReport.to_dict(), when timing was recorded
    title: str = ""
    tensors: dict[str, torch.Tensor] | None = None  # "MODE/STEP/NAME" (engine) and "hf/STEP/NAME", when captured
    backend: str = "torch"  # the engine's executor; files from before the field ran the torch backend

    def manifest(self, tensors_file: str | None) -> dict:
        """The JSON content, without the checksum."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "title": self.title, "model": self.model,
            "build": self.build, "prompt": self.prompt, "token_ids": list(self.token_ids), "names": list(self.names),
            "modes": list(self.modes), "steps": list(self.steps), "tolerances": self.tolerances,
            "expected_failures": self.expected_failures, "reports": self.reports, "environment": self.environment,
            "profile": self.profile, "tensors_file": tensors_file, "backend": self.backend,
        }


def key(mode: str, step: int) -> str:
    """The key of one (mode, step) in expected_failures."""
    return f"{mode}/{step}"


def environment(device: str = "cpu") -> dict:
    """Package versions and the device, recorded with a session."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "device": device}
    for pkg in ("transformers", "workbench"):
        try:
            from importlib.metadata import version

            env[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing version is not worth failing a save
            pass
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name()
    return env


def _checksum(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def save_session(session: Session, path: str | Path) -> Path:
    """Write the manifest (and the tensors file when there are tensors), each atomically."""
    path = Path(path)
    if path.suffix != SUFFIX:
        raise SessionFileError(f"{path}: session files end in {SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors_file = None
    if session.tensors:
        from safetensors.torch import save

        tensors_file = path.name + ".safetensors"
        blob = save({k: v.detach().cpu().contiguous() for k, v in session.tensors.items()})
        atomic_write(path.with_name(tensors_file), blob)
    manifest = session.manifest(tensors_file)
    if tensors_file:
        manifest["tensors_sha256"] = sha256_file(path.with_name(tensors_file))
    manifest["checksum"] = _checksum(manifest)
    atomic_write(path, (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode())
    return path


def load_session(path: str | Path, *, with_tensors: bool = True) -> Session:
    """Read and validate a session file; every problem is one SessionFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SessionFileError(f"{path}: no such session file")
    m = read_json(path, SessionFileError, "not a session file, or truncated: invalid JSON")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise SessionFileError(f"{path}: not a workbench session file")
    if m.get("format_version") != FORMAT_VERSION:
        raise SessionFileError(f"{path}: format version {m.get('format_version')!r}; this workbench reads version "
                               f"{FORMAT_VERSION}; record the session again")
    stored = m.pop("checksum", None)
    if stored != _checksum(m):
        raise SessionFileError(f"{path}: checksum mismatch: the file was edited by hand or corrupted; record it "
                               "again or accept new results with `wb replay --update`")
    _validate(m, path)
    tensors = None
    if with_tensors and m.get("tensors_file"):
        tensors = _load_tensors(path, m)
    return Session(model=m["model"], build=m["build"], token_ids=m["token_ids"], names=m["names"], modes=m["modes"],
                   steps=m["steps"], tolerances=m["tolerances"], reports=m["reports"],
                   expected_failures=m["expected_failures"], prompt=m.get("prompt"), environment=m["environment"],
                   profile=m.get("profile"), title=m.get("title", ""), tensors=tensors,
                   backend=m.get("backend", "torch"))


def _validate(m: dict, path: Path) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise SessionFileError(f"{path}: {what}")

    model = m.get("model")
    need(isinstance(model, dict) and model.get("source") in MODEL_SOURCES,
         f"model.source must be one of {', '.join(MODEL_SOURCES)}")
    if model["source"] == "checkpoint":
        need(isinstance(model.get("path"), str) and model["path"], "model.path must name a checkpoint directory")
    if model["source"] == "tiny":
        need(isinstance(model.get("spec"), dict), "model.spec must describe the tiny model")
    need(isinstance(m.get("build"), dict), "build must be an object")
    need(isinstance(m.get("token_ids"), list) and m["token_ids"] and all(isinstance(t, int) for t in m["token_ids"]),
         "token_ids must be a non-empty list of integers")
    need(isinstance(m.get("names"), list) and all(isinstance(n, str) for n in m["names"]), "names must be strings")
    need(isinstance(m.get("modes"), list) and set(m["modes"]) <= {"accumulated", "local"} and m["modes"],
         "modes must be accumulated and/or local")
    need(isinstance(m.get("steps"), list) and m["steps"] and all(isinstance(s, int) and s >= 0 for s in m["steps"]),
         "steps must be integers >= 0")
    need(isinstance(m.get("reports"), list), "reports must be a list")
    need(m.get("backend", "torch") in BACKEND_NAMES, f"backend must be one of {', '.join(BACKEND_NAMES)}")
    need(isinstance(m.get("expected_failures"), dict), "expected_failures must be an object")
    tf = m.get("tensors_file")
    if tf is not None:
        need(isinstance(tf, str) and tf == Path(tf).name and tf not in (".", "..") and "/" not in tf and "\\" not in tf,
             f"tensors_file {tf!r} must be a bare file name beside the session")


def _load_tensors(path: Path, m: dict) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    tpath = path.with_name(m["tensors_file"])
    if tpath.is_symlink():
        raise SessionFileError(f"{tpath}: the session's tensors file is a symbolic link; refusing to follow it")
    if not tpath.is_file():
        raise SessionFileError(f"{tpath}: the session's tensors file is missing")
    blob = tpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != m.get("tensors_sha256"):
        raise SessionFileError(f"{tpath}: sha256 does not match the session; the file is truncated or was replaced")
    try:
        return load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise SessionFileError(f"{tpath}: unreadable tensors file ({e})") from None
