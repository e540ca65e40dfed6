"""What the commands share: the console, build progress, and resolving a model argument to an engine."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from workbench.builder.build import build_engine
from workbench.builder.config import BuildConfig
from workbench.builder.engine import MANIFEST, Engine, load_engine
from workbench.errors import WorkbenchError

console = Console(stderr=True)  # progress and status go to stderr; results to stdout
out = Console()


@contextmanager
def build_progress(title: str):
    """A Rich progress bar; yields the callback the builder calls with (stage, done, total)."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stage]}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(title, total=5, stage="")

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, stage=stage)

        yield update


def engine_cache_dir(checkpoint: Path, config: BuildConfig) -> Path:
    """Where an engine built from `checkpoint` with `config` is cached."""
    from workbench.default_model import cache_dir

    ckpt = checkpoint.absolute()
    cfg_hash = hashlib.sha256((ckpt / "config.json").read_bytes()).hexdigest()
    key = hashlib.sha256(f"{ckpt}|{cfg_hash}|{sorted(config.to_dict().items())}".encode()).hexdigest()[:12]
    return cache_dir() / "engines" / f"{ckpt.name}-{config.dtype}-{key}"


def resolve_engine(model: str | None, dtype: str = "fp32", *, max_seq_len: int = 2048) -> Engine:
    """An engine for a model argument: an engine dir, a checkpoint dir (built and cached), or None (the default model)."""
    if model is None:
        from workbench.default_model import default_checkpoint

        with console.status("preparing the default model (SmolLM2-135M-Instruct, converted once from GGUF)..."):
            checkpoint = default_checkpoint()
    else:
        path = Path(model)
        if (path / MANIFEST).is_file():
            return load_engine(path)
        if not (path / "config.json").is_file():
            raise WorkbenchError(f"{model}: neither an engine directory ({MANIFEST}) nor a checkpoint directory (config.json)")
        checkpoint = path
    config = BuildConfig(dtype=dtype, max_seq_len=max_seq_len)
    target = engine_cache_dir(checkpoint, config)
    if (target / MANIFEST).is_file():
        try:
            return load_engine(target)
        except WorkbenchError:
            pass  # a broken cache entry is rebuilt
    with build_progress(f"building {checkpoint.name} ({config.dtype})") as progress:
        return build_engine(checkpoint, target, config, progress=progress)
