"""The fast path: the engine's graph compiled to one function of Triton plugins and cuBLAS GEMMs, and
a decode step captured as a CUDA graph per batch-size bucket.

- context phase (and any step that is not a plain decode step): the compiled program, eagerly;
- generation phase: one CUDA graph replay per step. Everything the step needs from the host (token
  ids, positions, block tables) goes into one staging tensor; the graph derives the rest on the
  device, computes the greedy next token and feeds it back, so `generate_greedy` replays steps back
  to back with no host sync until the end;
- debug engines: marked tensors are outputs of the same program and of the same graph; nothing that
  is computed changes (see cuda_program).

`Executor.run`'s contract holds: `run` returns fresh tensors (copies of the graph's static
outputs), and a `node_hook` (the profiler) or `substitute` (local diffs) falls back to the node-by-node
interpreter over the same plugin ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as TF

from workbench.builder.engine import Engine
from workbench.errors import WorkbenchError
from workbench.runtime import cuda_ops
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.cuda_program import Program, compile_network
from workbench.runtime.executor import Executor
from workbench.runtime.gemv_policy import GemvPolicy
from workbench.runtime.kv_cache import PagedKVCache


@dataclass
class GreedyOutput:
    """What `generate_greedy` returns: tokens [B, n] and, when asked, the marked tensors of every step."""

    tokens: torch.Tensor  # [B, max_new_tokens] int64, on the device
    prefill_ms: float = 0.0  # device time of the context phase and first token (CUDA events; 0 on the CPU)
    decode_ms: float = 0.0  # device time of the max_new_tokens - 1 generation steps
    prefill_outputs: dict[str, torch.Tensor] | None = None  # name -> [T, ...] of the context phase
    step_outputs: list[dict[str, torch.Tensor]] | None = None  # per generation step: name -> [B, ...]


class CudaExecutor(Executor):
    """An engine on the `cuda` backend: compiled program, fused plugins, CUDA-graph decode steps."""

    def __init__(self, engine: Engine, device: str | torch.device = "cuda", *, graphs: bool = True,
                 gemv: GemvPolicy | None = None, pdl: bool | str = "auto"):
        super().__init__(engine, device, backend="cuda")
        if pdl not in (True, False, "auto"):
            raise WorkbenchError(f"pdl must be True, False or 'auto', got {pdl!r}")
        self.gemv = gemv or GemvPolicy()
        self.pdl = pdl
        self.program: Program = compile_network(engine.network, self._helpers())
        bc = engine.build_config
        self.max_seq_len = bc.max_seq_len
        self.max_batch = bc.max_batch_size
        self.tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._table_len = 0
        self._ensure_tables(bc.max_seq_len)
        # without CUDA, decode steps still go through the same staged step, run eagerly (what CPU tests check);
        # attention the plugins do not implement (a quantized KV cache) needs the host's view of the batch
        self.use_graphs = graphs and all(cuda_ops.plain_attention(n) for n in engine.network.nodes.values()
                                         if n.op == "attention")
        self._graphs: dict[tuple[int, int], _DecodeGraph] = {}
        self._pool = None

    # -- the compiled program ------------------------------------------------------------------------
    def _helpers(self) -> dict:
        from workbench.plugins.activation import silu_and_mul
        from workbench.plugins.gemv import gemv
        from workbench.plugins.rms_norm import add_rms_norm, rms_norm

        policy = self.gemv

        def linear(x, w, b):
            cfg = policy.config(x.shape[0], w.shape[0], w.shape[1]) if x.dim() == 2 else None
            return TF.linear(x, w, b) if cfg is None else gemv(x, w, b, cfg)

        def swiglu_linear(x, w, b):  # silu(gate) * up of the gate_up projection, in its GEMV if chosen
            cfg = policy.swiglu_config(x.shape[0], w.shape[0], w.shape[1]) if x.dim() == 2 else None
            if cfg is not None:
                return gemv(x, w, b, cfg, swiglu=True)
            return silu_and_mul(linear(x, w, b))

        def op(node, xs, ctx):
            return cuda_ops.OPS[node.op](node, xs, ctx.meta)

        def quant_linear(node, xs):
            from workbench.plugins.quant_gemm import quant_linear as kernel

            return kernel(node, xs, None, policy.quant_config)

        def swiglu_quant_linear(node, xs):  # as swiglu_linear, for a weight-only quantized gate_up
            from workbench.plugins.quant_gemm import swiglu_quant_linear as kernel

            return kernel(node, xs, policy.quant_config, policy.swiglu_config)

        from workbench.runtime.norm_linear import norm_helpers

        from workbench.runtime.layer_block import make_helper

        helpers = {"_torch": torch, "_embedding": TF.embedding, "_linear": linear, "_swiglu_linear": swiglu_linear,
                   "_silu": TF.silu, "_rms_norm": rms_norm, "_add_rms_norm": add_rms_norm,
                   "_silu_and_mul": silu_and_mul, "_rope_qkv": cuda_ops.rope_qkv,
                   "_rope_attention": cuda_ops.rope_attention, "_attention": cuda_ops.attention, "_op": op,
                   "_quant_linear": quant_linear, "_swiglu_quant_linear": swiglu_quant_linear,
                   **norm_helpers(policy, linear, swiglu_linear, quant_linear, swiglu_quant_linear)}
        return {**helpers, "_layer_block": make_helper(helpers)}

    def _ensure_tables(self, length: int) -> None:
        from workbench.plugins.rotary import rope_table

        if length <= self._table_len:
            return
        dtype = self.engine.network.dtype
        from workbench.builder.network import torch_dtype

        for key, (param, scaling) in self.program.rope_tables.items():
            self.tables[key] = rope_table(self.weights[param], length, scaling, torch_dtype(dtype), self.device)
        self._table_len = length

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMeta,
            substitute: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One step over a packed batch, as Executor.run; decode steps replay a CUDA graph."""
        if substitute or self.node_hook is not None:
            return super().run(input_ids, positions, meta, substitute)
        if self.use_graphs and cuda_ops.step_kind(meta) == "decode" and len(meta.q_lens) <= self.max_batch:
            return self._graph_for(meta.cache, len(meta.q_lens)).run(input_ids, positions, meta)
        return self.run_program(input_ids, positions, meta)

    def run_program(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMeta) -> dict[str, torch.Tensor]:
        """The compiled program, eagerly (no graph)."""
        if positions.numel():
            top = int(positions.max()) + 1  # positions come from the host: no device sync
            if top > self._table_len:
                self._ensure_tables(max(top, 2 * self._table_len))
        ids = input_ids.to(self.device)
        pos = positions.to(self.device)
        ctx = cuda_ops.step_context(meta, pos, self.device, self.tables)
        with torch.inference_mode():
            return self.program.fn(ctx, self.weights, ids, pos)

    # -- CUDA graphs ---------------------------------------------------------------------------------
    def bucket(self, batch: int) -> int:
        """The captured batch size that serves `batch` sequences: a power of two, at most max_batch_size."""
        b = 1
        while b < batch:
            b *= 2
        return min(b, self.max_batch)

    def _graph_for(self, cache: PagedKVCache, batch: int) -> "_DecodeGraph":
        key = (id(cache), self.bucket(batch))
        g = self._graphs.get(key)
        if g is None or g.cache is not cache:
            if self._pool is None and self.device.type == "cuda":
                self._pool = torch.cuda.graph_pool_handle()
            g = _DecodeGraph(self, cache, key[1], self._pool)
            self._graphs[key] = g
        return g

    def capture(self, cache: PagedKVCache, batches: list[int] | None = None) -> None:
        """Capture the decode step for these batch sizes now (largest first, sharing one memory pool)."""
        for b in sorted({self.bucket(x) for x in (batches or [self.max_batch])}, reverse=True):
            self._graph_for(cache, b)

    def graph_report(self) -> dict[int, dict]:
        """Per captured batch bucket: whether its step launches with PDL, and the replay times that chose it."""
        return {b: {"pdl": g.pdl, "replay_ms": {str(k): round(v, 4) for k, v in g.replay_ms.items()}}
                for (_, b), g in self._graphs.items()}

    def release_graphs(self) -> None:
        """Drop every captured graph (and the caches they hold on to)."""
        self._graphs.clear()

    @torch.inference_mode()
    def generate_greedy(self, cache: PagedKVCache, prompts: list[list[int]], max_new_tokens: int, *,
                        collect: bool = False, seq_ids: list | None = None) -> GreedyOutput:
        """Greedy generation with the decode loop on the device: one graph replay per token, one sync at the end.

        The cache must be on this executor's device; sequences are reserved and released here.
        `collect` keeps every marked tensor of every step (debug engines).
        """
        n = len(prompts)
        if n > self.max_batch:
            raise WorkbenchError(f"batch of {n} exceeds the engine's max batch size {self.max_batch}")
        if max(len(p) for p in prompts) + max_new_tokens > self.max_seq_len:
            raise WorkbenchError(f"prompt + {max_new_tokens} new tokens exceeds the engine's max sequence length "
                                 f"{self.max_seq_len}")
        seq_ids = seq_ids or [("greedy", i) for i in range(n)]
        cache.reserve_all({s: len(p) + max_new_tokens for s, p in zip(seq_ids, prompts)})
        try:
            events = [torch.cuda.Event(enable_timing=True) for _ in range(3)] if self.device.type == "cuda" else None
            if events:
                events[0].record()
            lens = [len(p) for p in prompts]
            ids = torch.tensor([t for p in prompts for t in p], dtype=torch.int64)
            pos = torch.cat([torch.arange(k, dtype=torch.int64) for k in lens])
            outs = self.run_program(ids, pos, AttentionMeta(seq_ids, lens, [0] * n, cache))
            last = torch.tensor(lens, device=self.device).cumsum(0) - 1
            first = outs["logits"][last].argmax(-1)  # [B]
            g = self._graph_for(cache, n)
            g.stage(None, lens, seq_ids)
            g.staging[:n, 0].copy_(first)
            g.step.zero_()
            if events:
                events[1].record()
            steps = []
            for _ in range(max_new_tokens - 1):
                g.replay()
                if collect:
                    steps.append(g.snapshot(n))
            if events:
                events[2].record()
            tokens = torch.cat([first[:, None], g.history[:n, :max_new_tokens - 1]], dim=1)
            result = GreedyOutput(tokens, prefill_outputs=dict(outs) if collect else None)
            if events:
                events[2].synchronize()
                result.prefill_ms = events[0].elapsed_time(events[1])
                result.decode_ms = events[1].elapsed_time(events[2])
            result.step_outputs = [s() for s in steps] if collect else None
            return result
        finally:
            for s in seq_ids:
                cache.release(s)


class _DecodeGraph:
    """The decode step for one batch-size bucket over one paged KV cache, captured as a CUDA graph."""

    def __init__(self, ex: CudaExecutor, cache: PagedKVCache, bucket: int, pool):
        from workbench.plugins import paged_attention as pa
        from workbench.plugins.decode_step import STAGING_COLUMNS, decode_prologue, greedy_advance

        if not isinstance(cache, PagedKVCache) or cache.device != ex.device:
            raise WorkbenchError("CUDA-graph decoding needs a PagedKVCache on the executor's device")
        dev = ex.device
        self.cache = cache
        self.bucket = bucket
        page = cache.page_size
        pages = -(-ex.max_seq_len // page)
        self.pages = pages
        self.staging = torch.zeros(bucket, STAGING_COLUMNS + pages, dtype=torch.int32, device=dev)
        self.host = torch.zeros(bucket, STAGING_COLUMNS + pages, dtype=torch.int32)
        ids = torch.zeros(bucket, dtype=torch.int64, device=dev)
        positions = torch.zeros(bucket, dtype=torch.int64, device=dev)
        seq_lens = torch.zeros(bucket, dtype=torch.int32, device=dev)
        slots = torch.full((bucket,), -1, dtype=torch.int64, device=dev)
        self.history = torch.zeros(bucket, ex.max_seq_len, dtype=torch.int64, device=dev)
        self.step = torch.zeros(1, dtype=torch.int64, device=dev)
        ctx = cuda_ops.StepContext("decode", None, positions, kv=cache.layers, slots=slots,
                                   block_tables=self.staging[:, STAGING_COLUMNS:], seq_lens=seq_lens,
                                   partitions=pa.decode_partitions(pages * page, bucket, cache.num_kv_heads, page,
                                                                   head_dim=cache.head_dim),
                                   tables=ex.tables)
        program, weights = ex.program, ex.weights

        def body():
            decode_prologue(self.staging, page, ids, positions, seq_lens, slots)
            outs = program.fn(ctx, weights, ids, positions)
            greedy_advance(self.staging, outs["logits"], self.history, self.step)
            return outs, _pack(outs, bucket)

        self.graph = None
        self._body = body
        self.pdl: bool | None = None
        self.replay_ms: dict[bool, float] = {}
        if dev.type != "cuda":
            return
        from workbench.plugins.common import pdl_launches, use_pdl

        # programmatic dependent launch speeds some steps up and slows others down (measured on an H100: it
        # depends on the engine and the batch), so where the GPU has it the step is captured both ways and the
        # faster replay is kept
        choices = [True, False] if ex.pdl == "auto" and use_pdl() else [bool(ex.pdl) and use_pdl()]
        captured = {}
        for flag in choices:
            with pdl_launches(flag):
                captured[flag] = self._capture(body, pool)
            self.step.zero_()
        if len(captured) > 1:
            self.replay_ms = {flag: _replay_ms(graph) for flag, (graph, _) in captured.items()}
            self.step.zero_()
        self.pdl = min(captured, key=lambda f: self.replay_ms.get(f, 0.0))
        self.graph, (self.outputs, self.packed) = captured[self.pdl]

    def _capture(self, body, pool):
        """Warm up (Triton compiles here, not under capture) with every row marked padding (no cache writes),
        then capture one step: (graph, its static outputs)."""
        dev = self.staging.device
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(2):
                body()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs = body()
        return graph, outputs

    def stage(self, ids: torch.Tensor | None, positions: list[int], seq_ids: list) -> None:
        """Write the step's rows to the staging tensor: token ids (None: set by the caller), positions, valid
        and block tables; the rows past len(seq_ids) are padding."""
        n = len(seq_ids)
        h = self.host
        h.zero_()
        if ids is not None:
            h[:n, 0] = ids.to(torch.int32)
        h[:n, 1] = torch.tensor(positions, dtype=torch.int32)
        h[:n, 2] = 1
        for i, sid in enumerate(seq_ids):
            if positions[i] + 1 > self.cache.capacity(sid):
                raise IndexError(f"write up to position {positions[i] + 1} of sequence {sid!r} exceeds its reserved "
                                 f"capacity of {self.cache.capacity(sid)} tokens; call reserve() first")
            table = self.cache.block_table(sid)[: self.pages]
            h[i, 3:3 + len(table)] = torch.tensor(table, dtype=torch.int32)
        self.staging.copy_(h)

    def replay(self) -> None:
        """One decode step: the captured graph, or (without CUDA) the same step run eagerly."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.outputs, self.packed = self._body()

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMeta) -> dict[str, torch.Tensor]:
        """One decode step for the executor's run(): stage, replay, copy the outputs out."""
        self.stage(input_ids.cpu(), [int(p) for p in meta.past_lens], list(meta.seq_ids))
        self.replay()
        return self.snapshot(len(meta.seq_ids))()

    def snapshot(self, n: int):
        """Copy this step's outputs (first n rows) now; returns a function giving them by name."""
        packed = [(p[:n].clone(), names) for p, names in self.packed]
        single = {k: v[:n].clone() for k, v in self.outputs.items() if not any(k in names for _, names in self.packed)}

        def unpack() -> dict[str, torch.Tensor]:
            out = dict(single)
            for flat, names in packed:
                sizes = [self.outputs[k][0].numel() for k in names]
                for k, part in zip(names, torch.split(flat, sizes, dim=1)):
                    out[k] = part.view(n, *self.outputs[k].shape[1:])
            return {k: out[k] for k in self.outputs}

        return unpack


def _replay_ms(graph, warmup: int = 3, repeats: int = 10) -> float:
    """Milliseconds per replay of a captured step (padding rows only: it writes no cache entry)."""
    for _ in range(warmup):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def _pack(outs: dict[str, torch.Tensor], rows: int) -> list[tuple[torch.Tensor, list[str]]]:
    """Marked outputs of one dtype copied into one [rows, total] tensor inside the graph: one copy-out per
    dtype and step instead of one per tensor."""
    groups: dict[torch.dtype, list[str]] = {}
    for k, v in outs.items():
        if k != "logits" and v.dim() >= 1 and v.shape[0] == rows:
            groups.setdefault(v.dtype, []).append(k)
    return [(torch.cat([outs[k].reshape(rows, -1) for k in names], dim=1), names)
            for names in groups.values() if len(names) > 1]
