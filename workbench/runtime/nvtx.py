"""NVTX ranges named by canonical names: phase > step > layer > node, for Nsight Systems.

The executor runs without any of this unless a caller installs a node hook: with
`node_hook` None (the default) there is no cost at all. `NvtxRanges.step` installs one for
the duration of a step and pushes the outer ranges:

    ranges = NvtxRanges()                      # the `nvtx` package, else torch.cuda.nvtx, else off
    with ranges.step(executor, "generation", 5):
        executor.run(ids, positions, meta)     # context/generation > step 5 > layers.3 > layers.3.attn.core

Backends: the `nvtx` package when importable (its own domain "workbench", attributes
cached per name), else `torch.cuda.nvtx` when CUDA is available, else none (`enabled` is
False and `step` installs nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from workbench.names import layer_index

BACKENDS = ("auto", "nvtx", "torch", "noop", "off")
DOMAIN = "workbench"


def _nvtx_package() -> tuple[Callable[[str], None], Callable[[], None]] | None:
    try:
        import nvtx
    except ImportError:
        return None
    domain = nvtx.get_domain(DOMAIN)
    attrs: dict[str, object] = {}

    def push(name: str) -> None:
        a = attrs.get(name)
        if a is None:
            a = attrs[name] = domain.get_event_attributes(message=name)
        domain.push_range(a)

    return push, domain.pop_range


def _torch_cuda() -> tuple[Callable[[str], None], Callable[[], None]] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.nvtx.range_push, torch.cuda.nvtx.range_pop


def _noop_push(name: str) -> None:
    pass


def _noop_pop() -> None:
    pass


def resolve_backend(backend: str = "auto") -> tuple[str, Callable[[str], None] | None, Callable[[], None] | None]:
    """(name, push, pop) for a backend choice; name "off" with None functions when none is usable.

    "noop" gives functions that do nothing: the hook's own Python cost, for measuring it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown NVTX backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "off":
        return "off", None, None
    if backend == "noop":
        return "noop", _noop_push, _noop_pop
    for name, probe in (("nvtx", _nvtx_package), ("torch", _torch_cuda)):
        if backend in ("auto", name):
            found = probe()
            if found is not None:
                return name, found[0], found[1]
    return "off", None, None


def layer_group(name: str) -> str:
    """The top-level group of a node name: `layers.3` for `layers.3.attn.core`, else its first part (`embed`)."""
    i = layer_index(name)
    return f"layers.{i}" if i is not None else name.split(".", 1)[0]


class NvtxRanges:
    """A node hook that wraps every node in an NVTX range of its name, and each layer's nodes in one of the layer's."""

    def __init__(self, backend: str = "auto", *, layers: bool = True):
        self.backend, self._push, self._pop = resolve_backend(backend)
        self.layers = layers
        self._open_layer: str | None = None
        self._layer_of: dict[str, str | None] = {}  # node name -> its layer range (cached: called per node)

    @property
    def enabled(self) -> bool:
        """Whether ranges go anywhere (a backend was found)."""
        return self._push is not None

    def push(self, name: str) -> None:
        """Open a range (no-op when disabled)."""
        if self._push is not None:
            self._push(name)

    def pop(self) -> None:
        """Close the innermost range (no-op when disabled)."""
        if self._pop is not None:
            self._pop()

    @contextlib.contextmanager
    def range(self, name: str):
        """A range around a block."""
        self.push(name)
        try:
            yield
        finally:
            self.pop()

    def _layer(self, name: str) -> str | None:
        try:
            return self._layer_of[name]
        except KeyError:
            layer = f"layers.{layer_index(name)}" if self.layers and layer_index(name) is not None else None
            self._layer_of[name] = layer
            return layer

    def __call__(self, name: str, thunk: Callable[[], object]) -> object:
        """The executor's node hook: run `thunk` inside ranges for its layer and its name."""
        layer = self._layer(name)
        if layer != self._open_layer:
            self.close_layer()
            if layer is not None:
                self._push(layer)
                self._open_layer = layer
        self._push(name)
        try:
            return thunk()
        finally:
            self._pop()

    def close_layer(self) -> None:
        """Close the open layer range, if any (a step ends, or the next node is outside the layer)."""
        if self._open_layer is not None:
            self._pop()
            self._open_layer = None

    def wrap(self, inner: Callable[[str, Callable[[], object]], object]) -> Callable[[str, Callable[[], object]], object]:
        """A node hook that opens this hook's ranges around another hook (a timer)."""
        return lambda name, thunk: self(name, lambda: inner(name, thunk))

    @contextlib.contextmanager
    def step(self, executor, phase: str, index: int, *, inner=None):
        """Ranges `phase` > `step <index>` around one executor step, with this hook (around `inner`) installed."""
        if not self.enabled:
            previous = executor.node_hook
            executor.node_hook = inner if inner is not None else previous
            try:
                yield
            finally:
                executor.node_hook = previous
            return
        previous = executor.node_hook
        executor.node_hook = self if inner is None else self.wrap(inner)
        self.push(phase)
        self.push(f"step {index}")
        try:
            yield
        finally:
            self.close_layer()
            self.pop()
            self.pop()
            executor.node_hook = previous
