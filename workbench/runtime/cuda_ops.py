"""The `cuda` backend's ops: the reference ops with the Triton plugins swapped in, and the step
context (where each sequence's tokens sit in the packed batch and in the paged KV cache) that the
attention plugins read.

`OPS` runs node by node in the plain Executor (`Executor(engine, device, backend="cuda")`), as
the profiler and `wb diff --mode local` need; `runtime.cuda_executor.CudaExecutor` runs the same
kernels from a compiled program instead, with fusions and CUDA graphs. Triton is imported on first
use, so registering the backend costs nothing where it is never run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.builder.network import Node
from workbench.runtime import torch_ops
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.kv_cache import PagedKVCache


@dataclass
class StepContext:
    """One step's layout on the device, built once per step and shared by every attention layer.

    kind: "prefill" (every sequence starts at position 0: flash attention over the packed k, v),
    "decode" (one token per sequence over a paged cache: paged attention) or "mixed" (anything
    else, e.g. a chunk of a prompt after a past: the reference attention).
    """

    kind: str
    meta: AttentionMeta | None
    positions: torch.Tensor  # [T] int64
    kv: list[torch.Tensor] | None = None  # per layer [blocks, 2, page, Hkv, D]; None: no cache writes here
    slots: torch.Tensor | None = None  # [T] int64 page * page_size + offset, -1: padding
    cu_seqlens: torch.Tensor | None = None  # [B + 1] int32 (prefill)
    max_seqlen: int = 0
    block_tables: torch.Tensor | None = None  # [B, pages] int32 (decode)
    seq_lens: torch.Tensor | None = None  # [B] int32, 0: padding (decode)
    partitions: tuple[int, int] | None = None  # (size, count) of the decode split
    tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # rope cos/sin by key


def step_kind(meta: AttentionMeta) -> str:
    """prefill, decode or mixed (see StepContext); only the paged cache has a fast path."""
    if meta.cache is not None and not isinstance(meta.cache, PagedKVCache):
        return "mixed"
    if all(p == 0 for p in meta.past_lens):
        return "prefill"
    if isinstance(meta.cache, PagedKVCache) and all(n == 1 for n in meta.q_lens):
        return "decode"
    return "mixed"


def step_context(meta: AttentionMeta, positions: torch.Tensor, device: torch.device,
                 tables: dict | None = None) -> StepContext:
    """The device-side layout of a step described by `meta` (host work: slots and block tables)."""
    kind = step_kind(meta)
    ctx = StepContext(kind, meta, positions, tables=tables or {})
    cache = meta.cache
    if kind == "prefill":
        lens = torch.tensor([0] + list(meta.q_lens), dtype=torch.int32)
        ctx.cu_seqlens = lens.cumsum(0, dtype=torch.int32).to(device)
        ctx.max_seqlen = max(meta.q_lens) if meta.q_lens else 0
    if kind != "mixed" and isinstance(cache, PagedKVCache):
        page = cache.page_size
        slots, tables_ = [], []
        for sid, n, past in zip(meta.seq_ids, meta.q_lens, meta.past_lens):
            if past + n > cache.capacity(sid):
                raise IndexError(f"write up to position {past + n} of sequence {sid!r} exceeds its reserved capacity "
                                 f"of {cache.capacity(sid)} tokens; call reserve() first")
            table = torch.tensor(cache.block_table(sid), dtype=torch.int64)
            pos = torch.arange(past, past + n)
            slots.append(table[pos // page] * page + pos % page)
            tables_.append(table)
        ctx.kv = cache.layers
        ctx.slots = torch.cat(slots).to(device) if slots else torch.empty(0, dtype=torch.int64, device=device)
        if kind == "decode":
            width = max(len(t) for t in tables_)
            bt = torch.zeros(len(tables_), width, dtype=torch.int32)
            for i, t in enumerate(tables_):
                bt[i, :len(t)] = t.to(torch.int32)
            ctx.block_tables = bt.to(device)
            ctx.seq_lens = torch.tensor([p + 1 for p in meta.past_lens], dtype=torch.int32, device=device)
    return ctx


def plain_attention(node: Node) -> bool:
    """Whether the attention plugins implement this node (not a quantized KV cache, which the reference does)."""
    return len(node.inputs) == 3 and not node.attrs.get("kv_cache_dtype")


def attention(ctx: StepContext, node: Node, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              written: bool, *extra: torch.Tensor) -> torch.Tensor:
    """The attention op on the fast path; `written`: k, v are already in the cache (fused rope did it);
    `extra`: the KV scales of a quantized cache (reference attention)."""
    a = node.attrs
    window = a.get("sliding_window")
    layer = a["layer"]
    if ctx.kind == "mixed" or not plain_attention(node):
        if ctx.meta is None:
            raise RuntimeError(f"{node.name}: this attention needs the reference backend, which a captured step lacks")
        return torch_ops.attention(node, [q, k, v, *extra], ctx.meta)
    from workbench.plugins import paged_attention as pa

    if ctx.kv is not None and not written:
        pa.write_kv(ctx.kv[layer], ctx.slots, k, v)
    if ctx.kind == "prefill":
        from workbench.plugins.flash_attention import flash_attention

        return flash_attention(q, k, v, ctx.cu_seqlens, ctx.max_seqlen, a["scale"], window)
    kv = ctx.kv[layer]
    part, parts = _partitions(ctx, kv, q.shape[0])
    return pa.paged_decode_attention(q, kv, ctx.block_tables, ctx.seq_lens, a["scale"], window, part=part,
                                     num_parts=parts)


def _partitions(ctx: StepContext, kv: torch.Tensor, batch: int) -> tuple[int, int]:
    """The decode split of this step (the same for every layer; a captured step has it set already)."""
    from workbench.plugins import paged_attention as pa

    if ctx.partitions is None:
        ctx.partitions = pa.decode_partitions(ctx.block_tables.shape[1] * kv.shape[2], batch, kv.shape[3], kv.shape[2],
                                              head_dim=kv.shape[4])
    return ctx.partitions


def rope_qkv(ctx: StepContext, qkv: torch.Tensor, positions: torch.Tensor, num_heads: int, num_kv_heads: int,
             head_dim: int, layer: int, table: str, write: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused split + rope of q and k (+ the KV cache write when `write` and the step has a paged cache)."""
    from workbench.plugins.rotary import rope_qkv as kernel

    cos, sin = ctx.tables[table]
    write = write and ctx.kv is not None and ctx.kind != "mixed"
    return kernel(qkv, num_heads, num_kv_heads, head_dim, cos, sin, positions,
                  ctx.kv[layer] if write else None, ctx.slots if write else None)


def rope_attention(ctx: StepContext, node: Node, qkv: torch.Tensor, positions: torch.Tensor, num_heads: int,
                   num_kv_heads: int, head_dim: int, layer: int, table: str, fused_merge: bool = False) -> torch.Tensor:
    """rope_qkv then attention (the compiled program's rope_qkv fusion); a decode step over the paged cache does
    both in one kernel (paged_attention.paged_decode_attention_rope; `fused_merge`: its partitions merged by its
    last programs)."""
    if ctx.kind == "decode" and plain_attention(node) and ctx.kv is not None:
        from workbench.plugins import paged_attention as pa

        kv = ctx.kv[layer]
        cos, sin = ctx.tables[table]
        part, parts = _partitions(ctx, kv, qkv.shape[0])
        return pa.paged_decode_attention_rope(qkv, num_heads, cos, sin, positions, ctx.slots, kv, ctx.block_tables,
                                              ctx.seq_lens, node.attrs["scale"], node.attrs.get("sliding_window"),
                                              part=part, num_parts=parts, fused_merge=fused_merge)
    q, k = rope_qkv(ctx, qkv, positions, num_heads, num_kv_heads, head_dim, layer, table)
    v = qkv[:, (num_heads + num_kv_heads) * head_dim:].reshape(-1, num_kv_heads, head_dim)
    return attention(ctx, node, q, k, v, True)


# -- node-by-node ops (the plain Executor's `cuda` backend) ------------------------------------------


def _meta_context(meta: AttentionMeta, device: torch.device) -> StepContext:
    """One StepContext per meta object, shared by its layers (keyed by what the meta says)."""
    key = (tuple(meta.seq_ids), tuple(meta.q_lens), tuple(meta.past_lens), id(meta.cache))
    cached: Any = getattr(meta, "_cuda_step", None)
    if cached is None or cached[0] != key:
        ctx = step_context(meta, torch.empty(0, dtype=torch.int64, device=device), device)
        cached = (key, ctx)
        meta._cuda_step = cached
    return cached[1]


def _attention(node: Node, xs, meta: AttentionMeta):
    if not plain_attention(node):
        return torch_ops.attention(node, xs, meta)
    q, k, v = xs
    return attention(_meta_context(meta, q.device), node, q, k, v, False)


def _rms_norm(node: Node, xs, meta):
    from workbench.plugins.rms_norm import rms_norm

    x, w = xs
    if x.dtype != w.dtype:
        return torch_ops.rms_norm(node, xs, meta)
    return rms_norm(x, w, node.attrs["eps"])


def _rope(node: Node, xs, meta):
    from workbench.plugins.rotary import rope

    x, positions, inv_freq = xs  # [T, H, D], [T], [D/2]
    freqs = positions[:, None].to(torch.float32) * inv_freq[None, :].to(torch.float32)  # as torch_ops.rope
    emb = torch.cat((freqs, freqs), dim=-1)
    scale = node.attrs["attention_scaling"]
    cos = (emb.cos() * scale).to(x.dtype)
    sin = (emb.sin() * scale).to(x.dtype)
    rows = torch.arange(x.shape[0], device=x.device)
    return rope(x, cos, sin, rows)


def _quant_linear(node: Node, xs, meta):
    from workbench.plugins.quant_gemm import quant_linear

    return quant_linear(node, xs, meta)


OPS = {**torch_ops.OPS, "rms_norm": _rms_norm, "rope": _rope, "attention": _attention, "quant_linear": _quant_linear}
