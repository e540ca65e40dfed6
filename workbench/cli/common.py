"""What the commands share: the console, build progress, and resolving a model argument to an engine."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from workbench.builder.config import BuildConfig
from workbench.builder.engine import MANIFEST, Engine, load_engine
from workbench.engine_cache import cached_engine, engine_cache_dir
from workbench.errors import WorkbenchError

console = Console(stderr=True)  # progress and status go to stderr; results to stdout
out = Console()


@contextmanager
def build_progress(title: str):
    """A Rich progress bar; yields the callback the builder calls with (stage, done, total)."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stage]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(title, total=5, stage="")

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, stage=stage)

        yield update


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
    if (engine_cache_dir(checkpoint, config) / MANIFEST).is_file():
        return cached_engine(checkpoint, config)
    with build_progress(f"building {checkpoint.name} ({config.dtype})") as progress:
        return cached_engine(checkpoint, config, progress)
