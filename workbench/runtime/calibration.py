"""Gather calibration statistics: run a network through the torch executor with the inputs of
the target linears (and k, v of every attention) marked as outputs, and reduce them as they come."""

from __future__ import annotations

import torch

from workbench.builder.config import BuildConfig
from workbench.builder.engine import Engine
from workbench.builder.network import Network
from workbench.builder.passes import eliminate_dead_code
from workbench.builder.quantization.calibration import Calibration, InputStats, KVStats
from workbench.errors import WorkbenchError
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

    cal = Calibration(tokens=total, source=source)
    for name, src in inputs.items():
        a = acc[src]
        cal.inputs[name] = InputStats(
            linear=name, input=src, amax=a["amax"], absmean=(a["abssum"] / total).to(torch.float32), tokens=total,
            hessian=(a["hessian"] / total).to(torch.float32) if hessian else None,
            samples=torch.cat(a["samples"]) if a["samples"] else None)
    for attn, (k, v) in kv_amax.items():
        cal.kv[attn] = KVStats(attn, k, v)
    return cal


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
