"""How the quantization passes run a network: through a graph runner that the runtime registers here.

Calibration statistics and sequential GPTQ need the network run on token ids, which takes an
executor. The builder may not import the runtime (DESIGN.md: builder imports only torch, numpy
and safetensors), so the dependency points the other way: importing `workbench.runtime`
registers its torch executor as the runner (runtime/calibration.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from workbench.builder.network import Network
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.rewrite import QuantizedLinear
from workbench.errors import WorkbenchError

QuantizeOne = Callable[[str, torch.Tensor], QuantizedLinear]  # (linear, Hessian of its input) -> its quantized form


class GraphRunner(Protocol):
    """The two ways the quantization passes run a network on token ids."""

    def calibrate(self, net: Network, sequences: list[list[int]], linears: list[str], *, kv: bool, hessian: bool,
                  samples: int, seed: int, source: str) -> Calibration:
        """Statistics of the inputs of `linears` (and, with `kv`, of every attention's k and v) over `sequences`."""
        ...

    def quantize_sequentially(self, net: Network, sequences: list[list[int]], linears: list[str],
                              quantize_one: QuantizeOne) -> dict[str, QuantizedLinear]:
        """`quantize_one(name, hessian)` per linear in graph order, each Hessian taken after the earlier ones."""
        ...


_registered: GraphRunner | None = None


def register_graph_runner(runner: GraphRunner) -> None:
    """Make `runner` the one the quantization passes use."""
    global _registered
    _registered = runner


def graph_runner() -> GraphRunner:
    """The registered graph runner; a WorkbenchError when nothing registered one."""
    if _registered is None:
        raise WorkbenchError("quantization needs to run the network on calibration tokens, and no graph runner is "
                             "registered: import workbench.runtime (its torch executor registers itself)")
    return _registered
