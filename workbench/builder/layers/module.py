"""Modules with parameters, PyTorch-style; calling one adds its nodes under its path."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from workbench.builder.network import Network, Tensor, torch_dtype
from workbench.errors import ConversionError


class Parameter:
    """A weight slot: its expected shape, and its value once loaded."""

    def __init__(self, *shape: int, keep_dtype: bool = False):
        self.shape = tuple(shape)
        self.value: torch.Tensor | None = None
        self.keep_dtype = keep_dtype  # e.g. RoPE frequencies stay float32 in half-precision engines


class Module:
    """Base class: holds Parameters and child Modules; `bind()` gives each its path."""

    def __init__(self) -> None:
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "path", "")

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def bind(self, path: str = "") -> "Module":
        """Assign every module its dotted path from this root (`layers.3.attn`)."""
        object.__setattr__(self, "path", path)
        for name, child in self._children.items():
            child.bind(f"{path}.{name}" if path else name)
        return self

    def named_modules(self) -> Iterator[tuple[str, "Module"]]:
        """(path, module) for this module and every descendant."""
        yield self.path, self
        for child in self._children.values():
            yield from child.named_modules()

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(`path.name`, Parameter) for every parameter in the tree."""
        for path, mod in self.named_modules():
            for name, p in mod._params.items():
                yield (f"{path}.{name}" if path else name), p

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load every parameter, asserting that each key exists with the right shape and none is left over."""
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        if missing:
            raise ConversionError(f"missing weight {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        extra = sorted(set(state) - set(params))
        if extra:
            raise ConversionError(f"unexpected weight {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
        for key, p in params.items():
            value = state[key]
            if tuple(value.shape) != p.shape:
                raise ConversionError(f"weight {key!r} has shape {list(value.shape)}, expected {list(p.shape)}")
            p.value = value

    def const(self, net: Network, name: str) -> Tensor:
        """This module's parameter `name` as a graph constant, in the network's dtype."""
        p = self._params[name]
        if p.value is None:
            raise ConversionError(f"weight {self.path}.{name} was never loaded")
        value = p.value
        if value.is_floating_point() and not p.keep_dtype:
            value = value.to(torch_dtype(net.dtype))
        return net.param(f"{self.path}.{name}" if self.path else name, value)

    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        net = x.net
        with net.scope(self.path):
            out = self.forward(x, *args, **kwargs)
        return net.name_module_output(out, self.path)

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        raise NotImplementedError


class ModuleList(Module):
    """Numbered children: `layers.0`, `layers.1`, ..."""

    def __init__(self, modules: list[Module]):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)
        object.__setattr__(self, "items", list(modules))

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Module:
        return self.items[i]
