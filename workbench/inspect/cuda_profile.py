"""Profiling the `cuda` backend: its compiled program timed statement by statement, and its decode graph replayed.

The fast path does not run node by node: `CudaExecutor` runs one generated function whose
statements are single nodes or fusions (`add_rms_norm`, `swiglu_linear`, `rope_qkv`), and its
decode steps replay a CUDA graph. So:

- per-row timings: a copy of the program with every statement wrapped in the profiler's node hook
  (timer and NVTX ranges), under the canonical name of what it computes: its first canonical
  value, else its first value (`layers.3.mlp.act, layers.3.attn_residual = _norm_swiglu_linear(...)`
  is timed as `layers.3.mlp.act`; `ProfileReport.fused` says the add and `layers.3.post_norm` are
  computed there). A row's FLOPs
  and bytes are the sums of the graph nodes it computes, views and absorbed nodes included;
- the end-to-end step runs as the engine ships (the program; a graph replay for decode steps);
- `graph_step_time`: decode steps back to back as `CudaExecutor.generate_greedy` runs them (graph
  replays timed by CUDA events on a GPU, no host work between them); on the CPU there is no CUDA
  graph and the same staged step runs eagerly, timed by perf_counter.
"""

from __future__ import annotations

import ast
import functools
import re
import time
from dataclasses import dataclass, replace

import torch

from workbench.builder.engine import Engine
from workbench.builder.network import Network
from workbench.builder.ops import op_kind
from workbench.inspect.op_costs import OpCost
from workbench.inspect.profile_clock import quiet_timing
from workbench.inspect.profile_report import ProfileConfig, ProfileReport, Stat
from workbench.inspect.profiler import profile_engine, token_ids
from workbench.names import canonical_names
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.cuda_executor import CudaExecutor

# what a fused statement is called in the rows, and its op kind
FUSIONS = {"add_rms_norm": "norm", "swiglu_linear": "gemm", "swiglu_quant_linear": "gemm", "rope_qkv": "elementwise",
           "silu_and_mul": "elementwise", "norm_linear": "gemm", "norm_swiglu_linear": "gemm",
           "norm_quant_linear": "gemm", "norm_swiglu_quant_linear": "gemm"}


@dataclass
class Statement:
    """One statement of the compiled program: the row it is timed under and the graph nodes it computes."""

    name: str
    values: list[str]  # the nodes whose values it defines
    computes: list[str]  # those and the nodes folded into it (views the fusions dropped, absorbed nodes)
    op: str  # the node's op, or the fusion
    kind: str


def _node_of_var(net: Network) -> dict[str, str]:
    """Program variable -> node name, as the compiler derives one from the other (the first node wins a collision)."""
    out: dict[str, str] = {}
    for name in net.nodes:
        var = re.sub(r"\W", "_", name)
        if not var or var[0].isdigit() or var in ("ctx", "W", "N"):
            var = "v_" + var
        out.setdefault(var, name)
    return out


def _targets(stmt: ast.Assign) -> list[str]:
    (target,) = stmt.targets
    elts = target.elts if isinstance(target, ast.Tuple) else [target]
    return [e.id for e in elts]


def _op_of(stmt: ast.Assign, net: Network, node: str) -> tuple[str, str]:
    """(op, kind) of a statement: its fusion's, else its node's."""
    call = stmt.value
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id.lstrip("_") in FUSIONS:
        fusion = call.func.id.lstrip("_")
        return fusion, FUSIONS[fusion]
    if node not in net.nodes:  # a variable the name map could not place (two node names that collide)
        return "statement", "elementwise"
    return net.nodes[node].op, op_kind(net.nodes[node].op)


def instrument(source: str, net: Network) -> tuple[ast.Module, list[Statement]]:
    """The program's source with `x = expr` rewritten as `x = _hook(NAME, lambda: expr)`, and its statements."""
    tree = ast.parse(source)
    fn = tree.body[0]
    fn.args.args.append(ast.arg("_hook"))
    canon = set(canonical_names(sum(1 for n in net.nodes.values() if n.op == "attention")))
    node_of = _node_of_var(net)
    statements = []
    for stmt in fn.body:
        if not isinstance(stmt, ast.Assign):
            continue
        names = [node_of.get(v, v) for v in _targets(stmt)]
        name = next((n for n in names if n in canon), names[0])
        op, kind = _op_of(stmt, net, name)
        statements.append(Statement(name, names, list(names), op, kind))
        stmt.value = ast.Call(ast.Name("_hook", ast.Load()),
                              [ast.Constant(name), ast.Lambda(ast.arguments([], [], None, [], [], None, []), stmt.value)],
                              [])
    _fold_dropped(net, statements)
    return ast.fix_missing_locations(tree), statements


def _fold_dropped(net: Network, statements: list[Statement]) -> None:
    """Give each node no statement defines (fused away or a dropped view) to the first statement its value flows into."""
    index = {v: i for i, st in enumerate(statements) for v in st.values}
    consumers = net.consumers()
    for node in net.nodes.values():
        if node.op in ("param", "input") or node.name in index:
            continue
        seen, frontier, hits = set(), [node.name], []
        while frontier:
            cur = frontier.pop()
            for c in consumers.get(cur, []):
                if c in index:
                    hits.append(index[c])
                elif c not in seen:
                    seen.add(c)
                    frontier.append(c)
        if hits:
            statements[min(hits)].computes.append(node.name)


class TimedProgram:
    """A CudaExecutor as the profiler drives it: with no node hook, `run` is the executor's own (program, decode graph
    replays); with one, the compiled program with every statement inside the hook, under its row's name."""

    backend = "cuda"

    def __init__(self, executor: CudaExecutor):
        self.executor = executor
        self.engine = executor.engine
        self.device = executor.device
        self.node_hook = None
        tree, self.statements = instrument(executor.program.source, executor.engine.network)
        namespace = dict(executor.program.fn.__globals__)  # the helpers the program was compiled against
        exec(compile(tree, "<workbench timed cuda program>", "exec"), namespace)
        self._fn = namespace["program"]
        self.row_ops = {st.name: (st.op, st.kind) for st in self.statements}

    @property
    def fused(self) -> dict[str, str]:
        """Each value a statement computes beside the one it is named by (values it defines, and canonical ones it
        computes inside, as a norm inside a GEMV) -> that statement's row."""
        net = self.engine.network
        canon = set(canonical_names(sum(1 for n in net.nodes.values() if n.op == "attention")))
        return {v: st.name for st in self.statements for v in st.values + [c for c in st.computes if c in canon]
                if v != st.name}

    def fold_costs(self, costs: dict[str, OpCost]) -> dict[str, OpCost]:
        """Per row: the sums of the costs of the nodes it computes (None where none of them counts one)."""
        out = {}
        for st in self.statements:
            parts = [costs[n] for n in st.computes if n in costs]
            flops = [c.flops for c in parts if c.flops is not None]
            moved = [c.bytes for c in parts if c.bytes is not None]
            out[st.name] = OpCost(sum(flops) if flops else None, sum(moved) if moved else None)
        return out

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMeta,
            substitute: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One step: as the executor runs it, or (with a node hook) statement by statement through the hook."""
        if self.node_hook is None:
            return self.executor.run(input_ids, positions, meta, substitute)
        program = self.executor.program
        # run_program reads executor.program: swapped for this step only (a captured graph keeps its own)
        self.executor.program = replace(program, fn=functools.partial(self._fn, _hook=self.node_hook))
        try:
            return self.executor.run_program(input_ids, positions, meta)
        finally:
            self.executor.program = program


def graph_step_time(executor: CudaExecutor, config: ProfileConfig) -> Stat | None:
    """Milliseconds per decode step as `generate_greedy` replays them back to back after config.prompt_len tokens."""
    from workbench.runtime.session import GenerationSession

    engine = executor.engine
    p, b, page = config.prompt_len, config.batch_size, engine.build_config.kv_page_size
    new = min(config.steps + 1, engine.build_config.max_seq_len - p)
    if not executor.use_graphs or new < 2:  # no graph step (a quantized KV cache), or no room for a second token
        return None
    prompts = token_ids(config, int(engine.model_config.get("vocab_size", 2)))[:, :p].tolist()
    tokens = b * page * -(-(p + new) // page)
    cache = GenerationSession(engine, device=str(executor.device), executor=executor, kv_cache_tokens=tokens).cache
    samples = []
    with quiet_timing(config.threads):
        for r in range(config.warmup + config.repeats):
            if executor.device.type == "cuda":
                ms = executor.generate_greedy(cache, prompts, new).decode_ms
            else:  # no events: the run with the steps minus the run without them
                t0 = time.perf_counter()
                executor.generate_greedy(cache, prompts, 1)
                t1 = time.perf_counter()
                executor.generate_greedy(cache, prompts, new)
                ms = max(0.0, (time.perf_counter() - t1) - (t1 - t0)) * 1e3
            if r >= config.warmup:
                samples.append(ms / (new - 1))
    return Stat.of(samples)


def profile_cuda(engine: Engine, config: ProfileConfig | None = None, *, device: str | torch.device = "cuda",
                 executor: CudaExecutor | None = None) -> ProfileReport:
    """profile_engine for the cuda backend: per-row timings of the compiled program and the decode graph's step."""
    config = config or ProfileConfig()
    config.check()
    executor = executor or CudaExecutor(engine, device)
    timed = TimedProgram(executor)
    try:
        report = profile_engine(engine, config, executor=timed)
        report.backend, report.fused = "cuda", timed.fused
        if "generation" in report.phases:
            report.phases["generation"].graph_step_time = graph_step_time(executor, config)
    finally:
        executor.release_graphs()  # the graphs hold the caches made for timing
    return report
