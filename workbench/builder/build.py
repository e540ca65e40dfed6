"""The builder: HF checkpoint -> network -> passes -> Engine, and cached debug engines."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from workbench.builder.config import BuildConfig
from workbench.builder.engine import WEIGHTS, Engine, load_engine, save_engine
from workbench.builder.models import load_checkpoint
from workbench.builder.network import Network
from workbench.builder.passes import eliminate_dead_code, mark_outputs
from workbench.builder.quantization import quantize_network
from workbench.errors import EngineFileError
from workbench.fsutil import sha256_file, touch

Progress = Callable[[str, int, int], None]  # (stage, done, total)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")
STAGES = ("reading weights", "converting weights", "tracing graph", "running passes", "writing engine")


def run_passes(net: Network, config: BuildConfig) -> Network:
    """The build passes in order; each is a pure Network -> Network function."""
    net = mark_outputs(net, config.marked)
    net = eliminate_dead_code(net)
    net.validate()
    return net


def build(checkpoint_dir: str | Path, config: BuildConfig | None = None, *, progress: Progress | None = None) -> Engine:
    """Build an (unsaved) engine from an HF checkpoint directory."""
    config = config or BuildConfig()
    step = _stepper(progress)
    ckpt = Path(checkpoint_dir).absolute()
    family, model_config, model = load_checkpoint(ckpt, progress=lambda stage, *_: step(stage))
    step("tracing graph")
    net = model.to_network(config.dtype)
    step("running passes")
    if config.quant is not None:  # before marking: calibration runs the unmarked graph
        net = quantize_network(net, config.quant, checkpoint_dir=ckpt, vocab_size=model_config.vocab_size)
    net = run_passes(net, config)
    source = {"checkpoint": str(ckpt), "config_sha256": sha256_file(ckpt / "config.json")}
    return Engine(network=net, architecture=model_config.architecture, model_config=model_config.to_dict(),
                  build_config=config, source=source)


def build_engine(checkpoint_dir: str | Path, out_dir: str | Path, config: BuildConfig | None = None, *,
                 progress: Progress | None = None) -> Engine:
    """Build and save an engine directory, with the checkpoint's tokenizer files copied in."""
    engine = build(checkpoint_dir, config, progress=progress)
    _stepper(progress)("writing engine")
    ckpt = Path(checkpoint_dir)
    save_engine(engine, out_dir, tokenizer_files=[ckpt / f for f in TOKENIZER_FILES if (ckpt / f).is_file()])
    if progress:
        progress("done", len(STAGES), len(STAGES))
    return engine


def debug_engine(engine: Engine, patterns: list[str] | str) -> Engine:
    """The engine with extra outputs marked, rebuilt from its graph and cached by the marked set."""
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen = engine.network.copy().mark(list(patterns))
    wanted = sorted(set(engine.marked) | set(chosen))
    if set(wanted) == set(engine.marked):
        return engine
    if engine.path is None:
        return _with_marks(engine, wanted)
    key = hashlib.sha256(json.dumps(wanted).encode()).hexdigest()[:16]
    cache_dir = engine.path / "debug" / key
    if (cache_dir / "engine.json").is_file():
        try:
            cached = load_engine(cache_dir, verify=False, shared_weights=engine)
            if cached.weights_sha256 == engine.weights_sha256 and sorted(cached.marked) == wanted:
                touch(cache_dir)  # last use, for `wb cache prune`
                return cached
        except EngineFileError:
            pass  # a stale or broken cache entry is rebuilt below
    dbg = _with_marks(engine, wanted)
    save_engine(dbg, cache_dir, weights_from=engine.path / WEIGHTS)
    return dbg


def _with_marks(engine: Engine, wanted: list[str]) -> Engine:
    config = BuildConfig.from_dict({**engine.build_config.to_dict(), "marked": wanted})
    net = engine.network.copy()
    net.outputs = [o for o in net.outputs if o == "logits"]
    net = run_passes(net, config)
    return Engine(network=net, architecture=engine.architecture, model_config=engine.model_config,
                  build_config=config, source={**engine.source, "debug_of": str(engine.path) if engine.path else None})


def _stepper(progress: Progress | None):
    def step(stage: str) -> None:
        if progress:
            progress(stage, STAGES.index(stage) if stage in STAGES else 0, len(STAGES))

    return step
