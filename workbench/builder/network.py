"""The graph IR: a network of named nodes, built by functional ops and compiled by the builder."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch

from workbench import names as names_mod
from workbench.builder.ops import OPS
from workbench.errors import WorkbenchError

Dim = int | str  # a symbolic dim is a string such as "T" (tokens in the batch)


@dataclass
class Node:
    """One operation; its name is its canonical path (`layers.3.attn.core`)."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any]
    dtype: str
    shape: list[Dim]

    def to_dict(self) -> dict:
        """JSON form of the node."""
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "attrs": self.attrs,
                "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "Node":
        """Inverse of to_dict."""
        return cls(d["name"], d["op"], list(d["inputs"]), dict(d.get("attrs", {})), d["dtype"], list(d["shape"]))


class Tensor:
    """A symbolic value of a network: the output of the node with the same name."""

    def __init__(self, net: "Network", name: str):
        self.net = net
        self.name = name

    @property
    def node(self) -> Node:
        return self.net.nodes[self.name]

    @property
    def shape(self) -> list[Dim]:
        return self.node.shape

    @property
    def dtype(self) -> str:
        return self.node.dtype

    def __add__(self, other):
        from workbench.builder import functional as F

        return F.add(self, other)

    def __mul__(self, other):
        from workbench.builder import functional as F

        return F.mul(self, other)

    def __repr__(self) -> str:
        return f"Tensor({self.name}: {self.dtype}{self.shape})"


class GraphError(WorkbenchError):
    """A malformed network: unknown op, dangling input, duplicate name, missing weight."""


class Network:
    """An ordered graph of nodes plus the weights its `param` nodes refer to."""

    def __init__(self, dtype: str = "float32") -> None:
        torch_dtype(dtype)
        self.dtype = dtype  # activation and weight dtype of the engine
        self.nodes: dict[str, Node] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.weights: dict[str, torch.Tensor] = {}
        self._scopes: list[str] = []
        self._scope_of: dict[str, str] = {}

    # -- construction -------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, path: str):
        """Nodes added inside get names under `path` (module paths, not a global)."""
        self._scopes.append(path)
        try:
            yield
        finally:
            self._scopes.pop()

    @property
    def current_scope(self) -> str:
        return self._scopes[-1] if self._scopes else ""

    def _full_name(self, base: str) -> str:
        prefix = self.current_scope
        name = f"{prefix}.{base}" if prefix else base
        if name not in self.nodes:
            return name
        i = 1
        while f"{name}_{i}" in self.nodes:
            i += 1
        return f"{name}_{i}"

    def add(self, op: str, inputs: list[Tensor], attrs: dict | None = None, *, name: str | None = None,
            dtype: str, shape: list[Dim]) -> Tensor:
        """Append a node; `name` is relative to the current scope and made unique."""
        if op not in OPS:
            raise GraphError(f"unknown op {op!r}; known ops: {', '.join(sorted(OPS))}")
        for t in inputs:
            if t.net is not self:
                raise GraphError(f"op {op!r}: input {t.name!r} belongs to another network")
        full = self._full_name(name or op)
        self.nodes[full] = Node(full, op, [t.name for t in inputs], dict(attrs or {}), dtype, list(shape))
        self._scope_of[full] = self.current_scope
        return Tensor(self, full)

    def input(self, name: str, dtype: str, shape: list[Dim]) -> Tensor:
        """Declare a runtime input of the network."""
        t = self.add("input", [], name=name, dtype=dtype, shape=shape)
        self.inputs.append(t.name)
        return t

    def param(self, name: str, value: torch.Tensor) -> Tensor:
        """A constant weight; its node name is its key in the engine's weights file."""
        if name in self.nodes:
            return Tensor(self, name)
        self.nodes[name] = Node(name, "param", [], {}, dtype_name(value.dtype), list(value.shape))
        self._scope_of[name] = self.current_scope
        self.weights[name] = value
        return Tensor(self, name)

    def name_module_output(self, out: Tensor, path: str) -> Tensor:
        """Give a module's output the module's path: rename its own last node, else add an alias."""
        if path in self.nodes:
            return Tensor(self, path) if out.name == path else out
        last = next(reversed(self.nodes))
        if out.name == last and self._scope_of.get(last) == path and self.nodes[last].op != "param":
            node = self.nodes.pop(last)
            node.name = path
            self.nodes[path] = node
            self._scope_of[path] = self._scope_of.pop(last)
            self.outputs = [path if o == last else o for o in self.outputs]
            return Tensor(self, path)
        return self.add_alias(out, path)

    def add_alias(self, out: Tensor, path: str) -> Tensor:
        """An identity node named `path` (free at run time: the executor passes the value on)."""
        node = out.node
        self.nodes[path] = Node(path, "identity", [out.name], {}, node.dtype, list(node.shape))
        self._scope_of[path] = path
        return Tensor(self, path)

    def set_outputs(self, *outs: Tensor) -> None:
        """The network's primary outputs (logits)."""
        self.outputs = [t.name for t in outs]

    # -- marking --------------------------------------------------------------------
    @property
    def markable_names(self) -> list[str]:
        """Names that can be marked as extra outputs: every computed node."""
        return [n for n, node in self.nodes.items() if node.op not in ("param", "input")]

    def mark(self, patterns: str | list[str]) -> list[str]:
        """Mark every node selected by the patterns as an extra output; returns the names marked."""
        chosen = names_mod.match(patterns, self.markable_names)
        for n in chosen:
            if n not in self.outputs:
                self.outputs.append(n)
        return chosen

    # -- checks and forms -------------------------------------------------------------
    def validate(self) -> None:
        """Raise GraphError if any node is malformed; the network is then safe to execute."""
        seen: set[str] = set()
        for name, node in self.nodes.items():
            if name != node.name:
                raise GraphError(f"node {node.name!r} is stored under {name!r}")
            spec = OPS.get(node.op)
            if spec is None:
                raise GraphError(f"node {name!r}: unknown op {node.op!r}")
            if spec.arity is not None and len(node.inputs) not in spec.arity:
                raise GraphError(f"node {name!r}: op {node.op!r} takes {spec.arity} inputs, got {len(node.inputs)}")
            for i in node.inputs:
                if i not in seen:
                    raise GraphError(f"node {name!r}: input {i!r} is not defined before it")
            missing = [a for a in spec.required_attrs if a not in node.attrs]
            if missing:
                raise GraphError(f"node {name!r}: op {node.op!r} needs attributes {missing}")
            if node.op == "param":
                w = self.weights.get(name)
                if w is None:
                    raise GraphError(f"node {name!r}: no weight of that name")
                if list(w.shape) != list(node.shape):
                    raise GraphError(f"weight {name!r}: shape {list(w.shape)} but node says {node.shape}")
            seen.add(name)
        for o in self.outputs + self.inputs:
            if o not in self.nodes:
                raise GraphError(f"output or input {o!r} is not a node")
        if not self.outputs:
            raise GraphError("network has no outputs")

    def dump(self) -> str:
        """A readable text form, one node per line: `name: dtype[shape] = op(inputs) {attrs}`."""
        lines = [f"inputs: {', '.join(self.inputs)}"]
        for node in self.nodes.values():
            if node.op == "param":
                continue
            shape = ", ".join(str(d) for d in node.shape)
            attrs = "" if not node.attrs else " {" + ", ".join(f"{k}={v}" for k, v in node.attrs.items()) + "}"
            lines.append(f"{node.name}: {node.dtype}[{shape}] = {node.op}({', '.join(node.inputs)}){attrs}")
        lines.append(f"outputs: {', '.join(self.outputs)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The graph without weight values (those go to safetensors)."""
        return {"dtype": self.dtype, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "nodes": [n.to_dict() for n in self.nodes.values()]}

    @classmethod
    def from_dict(cls, d: dict, weights: dict[str, torch.Tensor]) -> "Network":
        """Rebuild a network from its JSON form and its weights."""
        net = cls(d.get("dtype", "float32"))
        for nd in d["nodes"]:
            node = Node.from_dict(nd)
            if node.name in net.nodes:  # a dict would silently keep only the last one
                raise GraphError(f"duplicate node name {node.name!r}")
            net.nodes[node.name] = node
        net.inputs = list(d["inputs"])
        net.outputs = list(d["outputs"])
        net.weights = dict(weights)
        return net

    def copy(self) -> "Network":
        """A structural copy sharing the (immutable) weight tensors."""
        net = Network(self.dtype)
        net.nodes = {k: copy.deepcopy(v) for k, v in self.nodes.items()}
        net.inputs, net.outputs = list(self.inputs), list(self.outputs)
        net.weights = dict(self.weights)
        net._scope_of = dict(self._scope_of)
        return net

    def consumers(self) -> dict[str, list[str]]:
        """For each node, the nodes that read it."""
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node in self.nodes.values():
            for i in node.inputs:
                out[i].append(node.name)
        return out


_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool, "float8_e4m3fn": torch.float8_e4m3fn,
}


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float16` -> `"float16"`."""
    for k, v in _DTYPES.items():
        if v == dtype:
            return k
    raise GraphError(f"unsupported dtype {dtype}")


def torch_dtype(name: str) -> torch.dtype:
    """`"float16"` -> `torch.float16`."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise GraphError(f"unknown dtype {name!r}; known: {', '.join(_DTYPES)}") from None
