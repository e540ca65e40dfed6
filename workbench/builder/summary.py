"""A data summary of an engine, for `wb inspect` and the TUI."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from workbench.builder.engine import Engine
from workbench.names import layer_index


@dataclass
class EngineSummary:
    """Counts and sizes of an engine."""

    path: str
    architecture: str
    dtype: str
    num_layers: int
    num_nodes: int
    ops: dict[str, int]
    num_parameters: int
    weight_bytes: int
    marked: list[str]
    max_batch_size: int
    max_seq_len: int
    kv_page_size: int
    source: str


def summarize(engine: Engine) -> EngineSummary:
    """Summarise an engine's graph and weights."""
    net = engine.network
    computed = [n for n in net.nodes.values() if n.op not in ("param", "input")]
    layers = {layer_index(n.name) for n in computed} - {None}
    bc = engine.build_config
    return EngineSummary(
        path=str(engine.path or ""), architecture=engine.architecture, dtype=bc.dtype, num_layers=len(layers),
        num_nodes=len(computed), ops=dict(Counter(n.op for n in computed).most_common()),
        num_parameters=sum(w.numel() for w in net.weights.values()),
        weight_bytes=sum(w.numel() * w.element_size() for w in net.weights.values()),
        marked=engine.marked, max_batch_size=bc.max_batch_size, max_seq_len=bc.max_seq_len,
        kv_page_size=bc.kv_page_size, source=engine.source.get("checkpoint", ""),
    )
