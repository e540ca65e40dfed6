"""Runs an engine's graph node by node on one backend, returning the logits and every marked tensor."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.builder.engine import Engine
from workbench.errors import WorkbenchError
from workbench.runtime import cuda_ops, torch_ops
from workbench.runtime.attention_meta import AttentionMeta

# "cuda": the reference ops with the Triton plugins swapped in, node by node (Triton loads on first
# use); runtime.cuda_executor.CudaExecutor is the compiled, CUDA-graph fast path over the same plugins.
BACKENDS = {"torch": torch_ops.OPS, "cuda": cuda_ops.OPS}


@dataclass
class _Step:
    name: str
    fn: object
    node: object
    inputs: tuple[str, ...]
    free_after: tuple[str, ...]  # values no later node (nor any output) needs


class Executor:
    """An engine loaded on a device, ready to run packed token batches."""

    def __init__(self, engine: Engine, device: str | torch.device = "cpu", backend: str = "torch"):
        if backend not in BACKENDS:
            raise WorkbenchError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
        self.engine = engine
        self.device = torch.device(device)
        self.backend = backend
        net = engine.network
        self.outputs = list(net.outputs)
        self.weights = {k: v.to(self.device) for k, v in net.weights.items()}
        ops = BACKENDS[backend]
        missing = sorted({n.op for n in net.nodes.values() if n.op not in ops and n.op not in ("param", "input")})
        if missing:
            raise WorkbenchError(f"backend {backend!r} cannot run ops {missing}")
        self.steps = self._schedule(net, ops)
        tables = [self.weights[n.inputs[1]] for n in net.nodes.values()
                  if n.op == "embedding" and n.inputs[0] == "input_ids" and n.inputs[1] in self.weights]
        self.vocab_size = tables[0].shape[0] if tables else None
        self.node_hook = None  # optional callable(name, fn) -> value, used by the profiler

    def _schedule(self, net, ops) -> list[_Step]:
        order = [n for n in net.nodes.values() if n.op not in ("param", "input")]
        last_use: dict[str, int] = {}
        for i, node in enumerate(order):
            for x in node.inputs:
                last_use[x] = i
        keep = set(self.outputs) | set(net.inputs) | set(self.weights)
        frees: dict[int, list[str]] = {}
        for name, i in last_use.items():
            if name not in keep:
                frees.setdefault(i, []).append(name)
        return [_Step(n.name, ops[n.op], n, tuple(n.inputs), tuple(frees.get(i, ()))) for i, n in enumerate(order)]

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMeta,
            substitute: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One step over a packed batch: input_ids, positions [T] -> {output name: tensor [T, ...]}.

        `substitute` replaces named values after they are computed: outputs report the engine's
        own value, while later nodes read the substitute (how `wb diff --mode local` feeds each
        engine layer the baseline's input).
        """
        env: dict[str, torch.Tensor] = dict(self.weights)
        own: dict[str, torch.Tensor] = {}
        env["input_ids"] = input_ids.to(self.device)
        env["positions"] = positions.to(self.device)
        hook = self.node_hook
        for step in self.steps:
            xs = [env[i] for i in step.inputs]
            if hook is None:
                env[step.name] = step.fn(step.node, xs, meta)
            else:
                env[step.name] = hook(step.name, lambda: step.fn(step.node, xs, meta))
            if substitute and step.name in substitute:
                own[step.name] = env[step.name]
                env[step.name] = substitute[step.name].to(device=self.device, dtype=env[step.name].dtype)
            for f in step.free_after:
                del env[f]
        return {o: own.get(o, env[o]) for o in self.outputs}

    def forward(self, sequences: list[list[int]],
                substitute: list[dict[str, torch.Tensor]] | None = None) -> list[dict[str, torch.Tensor]]:
        """A plain forward pass (no cache) of each token sequence; per sequence, every output by name.

        `substitute` holds, per sequence, values that replace the engine's (see `run`).
        """
        if not sequences or any(len(s) == 0 for s in sequences):
            raise WorkbenchError("forward: every sequence needs at least one token")
        lengths = [len(s) for s in sequences]
        ids = torch.tensor([t for s in sequences for t in s], dtype=torch.int64)
        if self.vocab_size is not None and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)][0].item()
            raise WorkbenchError(f"forward: token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        pos = torch.cat([torch.arange(n, dtype=torch.int64) for n in lengths])
        packed = None
        if substitute:
            packed = {k: torch.cat([sub[k] for sub in substitute]) for k in substitute[0]}  # each [n, ...]
        outs = self.run(ids, pos, AttentionMeta.prefill(lengths), substitute=packed)
        split = {name: torch.split(t, lengths) for name, t in outs.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(sequences))]
