"""FLOPs and bytes moved per graph node for one step, from the graph's shapes and the batch layout.

Counts are the minimum a kernel must do: each tensor read or written once, views
(identity, reshape, slice, transpose) free. Linear: 2*T*in*out FLOPs (+ T*out for a
bias), bytes = weights + activations in + out. Attention: the useful causal FLOPs
(4 * Hq * D per query-key pair allowed by the mask, as FlashAttention counts them) and
bytes = q, out, the new k/v written to the cache and the whole k/v history read back.
FLOPs are given for GEMMs and attention only (None elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.builder.network import Network, Node, torch_dtype

VIEW_OPS = ("identity", "reshape", "slice", "transpose")


@dataclass(frozen=True)
class OpCost:
    """What one node does in one step."""

    flops: float | None
    bytes: float | None


def _elem_size(dtype: str) -> int:
    return torch.empty(0, dtype=torch_dtype(dtype)).element_size()


def _numel(shape, num_tokens: int) -> int:
    return math.prod(num_tokens if isinstance(d, str) else int(d) for d in shape)


def _nbytes(node: Node, num_tokens: int) -> int:
    return _numel(node.shape, num_tokens) * _elem_size(node.dtype)


def _attention_pairs(q_lens: list[int], past_lens: list[int], window: int | None) -> int:
    """Query-key pairs the causal (sliding-window) mask allows, over all sequences."""
    pairs = 0
    for n, past in zip(q_lens, past_lens):
        for p in range(past, past + n):
            pairs += min(p + 1, window) if window else p + 1
    return pairs


def node_cost(net: Network, node: Node, q_lens: list[int], past_lens: list[int], kv_elem_size: int | None = None) -> OpCost:
    """FLOPs and bytes of `node` in a step whose packed batch has sequences of q_lens new tokens after past_lens."""
    t = sum(q_lens)
    ins = [net.nodes[i] for i in node.inputs]
    out_bytes = _nbytes(node, t)
    if node.op in VIEW_OPS:
        return OpCost(None, None)
    if node.op == "linear":
        x, w = ins[0], ins[1]
        out_f, in_f = int(w.shape[0]), int(w.shape[1])
        flops = 2.0 * t * in_f * out_f + (t * out_f if len(ins) == 3 else 0)
        return OpCost(flops, float(sum(_nbytes(i, t) for i in ins) + out_bytes))
    if node.op == "matmul":
        a = ins[0]
        k = a.shape[-1] if not isinstance(a.shape[-1], str) else t
        flops = 2.0 * _numel(node.shape, t) * int(k)
        return OpCost(flops, float(sum(_nbytes(i, t) for i in ins) + out_bytes))
    if node.op == "attention":
        a = node.attrs
        hq, hkv, d = a["num_heads"], a["num_kv_heads"], a["head_dim"]
        es = _elem_size(node.dtype)
        kv_es = kv_elem_size or es
        pairs = _attention_pairs(q_lens, past_lens, a.get("sliding_window"))
        history = sum(p + n for n, p in zip(q_lens, past_lens))
        moved = 2 * t * hq * d * es + 2 * t * hkv * d * (es + kv_es) + 2 * history * hkv * d * kv_es
        return OpCost(4.0 * hq * d * pairs, float(moved))
    if node.op == "embedding":
        ids = ins[0]
        return OpCost(None, float(_nbytes(ids, t) + 2 * out_bytes))  # the rows read, then written
    return OpCost(None, float(sum(_nbytes(i, t) for i in ins) + out_bytes))


def step_costs(net: Network, q_lens: list[int], past_lens: list[int], kv_elem_size: int | None = None) -> dict[str, OpCost]:
    """node_cost of every computed node of the network, by name."""
    return {n.name: node_cost(net, n, q_lens, past_lens, kv_elem_size)
            for n in net.nodes.values() if n.op not in ("param", "input")}
