"""Gather calibration statistics: run a network through the torch executor with the inputs of
the target linears (and k, v of every attention) marked as outputs, and reduce them as they come.

`quantize_sequentially` is the other way to run calibration data: node by node, quantizing each
target linear when the run reaches it (sequential GPTQ).

The builder's quantization passes call both through the graph runner this module registers
with them on import (builder/quantization/runner.py): the builder may not import the runtime."""

from __future__ import annotations

from typing import Callable

import torch

from workbench.builder.config import BuildConfig
from workbench.builder.engine import Engine
from workbench.builder.network import Network
from workbench.builder.passes import eliminate_dead_code
from workbench.builder.quantization.calibration import Calibration, InputStats, KVStats
from workbench.builder.quantization.rewrite import QuantizedLinear, quant_linear_node
from workbench.builder.quantization.runner import register_graph_runner
from workbench.errors import WorkbenchError
from workbench.runtime import torch_ops
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.executor import Executor


def calibrate(net: Network, sequences: list[list[int]], linears: list[str], *, kv: bool = False,
              hessian: bool = False, samples: int = 0, batch_tokens: int = 1024, seed: int = 0,
              source: str = "") -> Calibration:
    """Statistics of the inputs of `linears` (and, with `kv`, of every attention's k and v) over `sequences`.

    `hessian` accumulates X^T X / n per linear (GPTQ); `samples` keeps that many input rows per
    linear, drawn uniformly at random over all tokens (AWQ).
    """
    if not sequences:
        raise WorkbenchError("calibration: no token sequences")
    inputs = {name: net.nodes[name].inputs[0] for name in linears}
    attns = {n.name: (n.inputs[1], n.inputs[2]) for n in net.nodes.values() if n.op == "attention"} if kv else {}
    watched = sorted(set(inputs.values()) | {x for kvp in attns.values() for x in kvp})
    probe = net.copy()
    probe.outputs = watched  # no logits: the LM head is not needed for calibration
    probe = eliminate_dead_code(probe)
    engine = Engine(network=probe, architecture="calibration", model_config={}, build_config=BuildConfig(dtype=net.dtype))
    executor = Executor(engine)

    total = sum(len(s) for s in sequences)
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(total, dtype=torch.bool)
    if samples:
        keep[torch.randperm(total, generator=g)[:samples]] = True

    acc: dict[str, dict] = {}
    kv_amax: dict[str, list[torch.Tensor]] = {}
    seen = 0
    for batch in _batches(sequences, batch_tokens):
        outs = executor.forward(batch)
        for values in outs:
            n = next(iter(values.values())).shape[0]
            rows = keep[seen:seen + n]
            for src in set(inputs.values()):
                x = values[src].to(torch.float32).reshape(n, -1)  # [n, K]
                a = acc.setdefault(src, {"amax": torch.zeros(x.shape[1]), "abssum": torch.zeros(x.shape[1], dtype=torch.float64),
                                         "hessian": None, "samples": []})
                a["amax"] = torch.maximum(a["amax"], x.abs().amax(0))
                a["abssum"] += x.abs().sum(0, dtype=torch.float64)
                if hessian:
                    xx = x.T @ x
                    a["hessian"] = xx if a["hessian"] is None else a["hessian"] + xx
                if samples and rows.any():
                    a["samples"].append(x[rows])
            for attn, (k_name, v_name) in attns.items():
                k = values[k_name].to(torch.float32).abs().amax(dim=(0, 2))  # [Hkv]
                v = values[v_name].to(torch.float32).abs().amax(dim=(0, 2))
                old = kv_amax.get(attn)
                kv_amax[attn] = [k, v] if old is None else [torch.maximum(old[0], k), torch.maximum(old[1], v)]
            seen += n

    cal = Calibration(tokens=total, source=source, sequences=[list(seq) for seq in sequences])
    for name, src in inputs.items():
        a = acc[src]
        cal.inputs[name] = InputStats(
            linear=name, input=src, amax=a["amax"], absmean=(a["abssum"] / total).to(torch.float32), tokens=total,
            hessian=(a["hessian"] / total).to(torch.float32) if hessian else None,
            samples=torch.cat(a["samples"]) if a["samples"] else None)
    for attn, (k, v) in kv_amax.items():
        cal.kv[attn] = KVStats(attn, k, v)
    return cal


def quantize_sequentially(net: Network, sequences: list[list[int]], linears: list[str],
                          quantize_one: Callable[[str, torch.Tensor], QuantizedLinear], *,
                          batch_tokens: int = 1024) -> dict[str, QuantizedLinear]:
    """Quantize `linears` in graph order, each from the Hessian X^T X / n of its input in the network
    whose earlier linears are already quantized; returns `quantize_one(name, hessian)` per linear.

    One pass over `sequences`, node by node with every batch in step: when the run reaches a
    linear, its Hessian is reduced over all tokens, the linear is quantized, and the quantized
    layer (the `quant_linear` op the engine will run) computes the output later nodes read.
    Linears that read the same value share one Hessian.
    """
    if not sequences:
        raise WorkbenchError("calibration: no token sequences")
    wanted = set(linears)
    probe = net.copy()
    probe.outputs = list(linears)
    probe = eliminate_dead_code(probe)  # drops what follows the last linear (the LM head)
    # only the last linear stays an output: the executor's schedule then frees every other value after its last use
    probe.outputs = [n for n in probe.nodes if n in wanted][-1:]
    executor = Executor(Engine(network=probe, architecture="calibration", model_config={},
                               build_config=BuildConfig(dtype=net.dtype)))
    runs = [_start(executor, batch) for batch in _batches(sequences, batch_tokens)]
    total = sum(len(s) for s in sequences)
    hessians: dict[str, torch.Tensor] = {}
    out: dict[str, QuantizedLinear] = {}
    for step in executor.steps:
        node, fn = step.node, step.fn
        if step.name in wanted:
            src = node.inputs[0]
            if src not in hessians:
                hessians[src] = _hessian([env[src] for env, _ in runs]) / total
            out[step.name] = quantize_one(step.name, hessians[src])
            node, params = quant_linear_node(node, out[step.name])
            fn = torch_ops.OPS["quant_linear"]
            for env, _ in runs:
                env.update(params)
        with torch.inference_mode():
            for env, meta in runs:
                env[step.name] = fn(node, [env[i] for i in node.inputs], meta)
                for f in step.free_after:
                    del env[f]
    return out


def _start(executor: Executor, sequences: list[list[int]]) -> tuple[dict[str, torch.Tensor], AttentionMeta]:
    """The starting values (weights, packed input ids and positions) and attention metadata of one batch."""
    lengths = [len(s) for s in sequences]
    env = dict(executor.weights)
    env["input_ids"] = torch.tensor([t for s in sequences for t in s], dtype=torch.int64)
    env["positions"] = torch.cat([torch.arange(n, dtype=torch.int64) for n in lengths])
    return env, AttentionMeta.prefill(lengths)


def _hessian(xs: list[torch.Tensor]) -> torch.Tensor:
    """X^T X [K, K] in float32 over the rows of every batch's value."""
    h = None
    for x in xs:
        x = x.to(torch.float32).reshape(x.shape[0], -1)  # [T, K]
        h = x.T @ x if h is None else h + x.T @ x
    return h


def _batches(sequences: list[list[int]], batch_tokens: int):
    batch, n = [], 0
    for s in sequences:
        if batch and n + len(s) > batch_tokens:
            yield batch
            batch, n = [], 0
        batch.append(s)
        n += len(s)
    if batch:
        yield batch


class TorchGraphRunner:
    """The quantization passes' graph runner: networks run on the torch executor."""

    calibrate = staticmethod(calibrate)
    quantize_sequentially = staticmethod(quantize_sequentially)


register_graph_runner(TorchGraphRunner())
