"""`wb profile`: per-layer and per-node timings, a Chrome trace timeline, and the HF baseline beside them."""

from __future__ import annotations

from pathlib import Path

import click
import torch
from rich.console import Console
from rich.table import Table

from workbench.builder.config import canonical_dtype
from workbench.cli.common import console, resolve_engine
from workbench.cli.common import out as stdout
from workbench.errors import WorkbenchError
from workbench.inspect.profiler import ProfileConfig, Row, profile_engine
from workbench.inspect.timeline import PhaseSummary, ProfileSummary, summarize_profile, write_chrome_trace
from workbench.runtime.backends import BACKEND_NAMES, resolve_device
from workbench.runtime.nvtx import BACKENDS

PHASE_CHOICES = {"context": ("context",), "generation": ("generation",), "both": ("context", "generation")}


@click.command("profile")
@click.argument("model", required=False)
@click.option("--phase", type=click.Choice(list(PHASE_CHOICES)), default="both", show_default=True)
@click.option("--steps", default=16, show_default=True, type=int, help="Decode steps in the generation phase.")
@click.option("--prompt-len", default=128, show_default=True, type=int, help="Prompt tokens per sequence.")
@click.option("--batch-size", default=1, show_default=True, type=int, help="Sequences in each step.")
@click.option("--repeats", default=5, show_default=True, type=int, help="Timed runs of every step.")
@click.option("--warmup", default=2, show_default=True, type=int, help="Untimed runs first.")
@click.option("--trace", "trace_path", type=click.Path(path_type=Path), help="Write a Chrome trace (Perfetto) here.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the full report as JSON here.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also time the HF model the engine was built from.")
@click.option("--dtype", default=None, help="fp32, fp16 or bf16 when building from a checkpoint [default: fp32].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Where to run [default: cuda if available (always for --backend cuda), else cpu].")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="torch", show_default=True,
              help="torch: the reference executor, node by node; cuda: the fast path's compiled program statement by "
                   "statement, and its decode step as a CUDA-graph replay (needs a GPU, or TRITON_INTERPRET=1 with "
                   "--device cpu).")
@click.option("--threads", type=int, default=None, help="torch CPU threads while timing (1 is steadiest on a busy CPU).")
@click.option("--nvtx", "nvtx_backend", type=click.Choice([b for b in BACKENDS if b != "noop"]), default="auto",
              show_default=True, help="NVTX ranges around phases, steps, layers and nodes.")
@click.option("--top", default=8, show_default=True, type=int, help="Rows in each table.")
def profile_command(model, phase, steps, prompt_len, batch_size, repeats, warmup, trace_path, json_path, baseline,
                    dtype, device, backend, threads, nvtx_backend, top):
    """Time every layer and node of an engine (an engine dir, a checkpoint dir, or the default model)."""
    device = resolve_device(backend, device or ("cuda" if torch.cuda.is_available() or backend == "cuda" else "cpu"))
    engine = resolve_engine(model, dtype or "fp32")
    if dtype and canonical_dtype(dtype) != engine.build_config.dtype:
        console.print(f"[yellow]note[/]: {model} is an engine built in {engine.build_config.dtype}; --dtype {dtype} "
                      "applies only when building from a checkpoint")
    config = ProfileConfig(phases=PHASE_CHOICES[phase], prompt_len=prompt_len, steps=steps, batch_size=batch_size,
                           warmup=warmup, repeats=repeats, nvtx=nvtx_backend, baseline=False, threads=threads)
    config.check()
    with console.status(f"profiling the {backend} backend on {device} ({', '.join(config.phases)}, {repeats} repeats)..."):
        if backend == "cuda":
            from workbench.inspect.cuda_profile import profile_cuda

            report = profile_cuda(engine, config, device=device)
        else:
            report = profile_engine(engine, config, device=device)
    if baseline:
        report = _with_baseline(engine, report)
    if json_path:
        report.save(json_path)
        console.print(f"wrote {json_path}")
    if trace_path:
        write_chrome_trace(report, trace_path)
        console.print(f"wrote {trace_path} (open it in https://ui.perfetto.dev or chrome://tracing)")
    render(summarize_profile(report, top=top))


def _with_baseline(engine, report):
    """The report with the HF baseline's timings added; a warning (not a failure) when HF cannot run."""
    from workbench.inspect.hf_profile import add_baseline

    try:
        with console.status("timing the HF baseline..."):
            add_baseline(report, engine)
    except WorkbenchError as e:
        console.print(f"[yellow]no HF baseline[/]: {e} (use --no-baseline to skip it)")
    return report


# -- rendering ----------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _si(x: float | None) -> str:
    """4740 -> `4.74k`; blank for None or 0."""
    if not x:
        return ""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{prefix}"
    return f"{x:.3g}"


def _bar(share: float, width: int = 10) -> str:
    n = max(0, min(width, round(share * width)))
    return "█" * n + "·" * (width - n)


def render(summary: ProfileSummary, to: Console | None = None) -> None:
    """Print the summary (to stdout, or the console `to`): one block of tables per phase."""
    out = to or stdout
    threads = f", {summary.threads} CPU threads" if summary.device == "cpu" else ""
    out.print(f"[bold]{summary.model}[/] on {summary.device} ({summary.device_name}{threads}), {summary.dtype}, "
              f"{summary.backend} backend, NVTX {summary.nvtx}")
    if summary.fused:
        where = ", ".join(f"{name} in {row}" for name, row in summary.fused.items())
        out.print(f"[dim]fused: {where} (a fused statement is timed once, under its first canonical name)[/]",
                  soft_wrap=True)
    for ph in summary.phases:
        _render_phase(ph, out, summary.device)


def _render_phase(ph: PhaseSummary, out: Console, device: str) -> None:
    st = ph.step_time
    out.print()
    tokens = f"{ph.num_tokens} token{'s' if ph.num_tokens != 1 else ''}"
    out.print(f"[bold cyan]{ph.phase}[/]: {tokens} per step, {st.median_ms:.3f} ms per step "
              f"(median of {st.samples}, min {st.min_ms:.3f}, max {st.max_ms:.3f}), {ph.tokens_per_s:,.0f} tokens/s; "
              f"node timings account for {ph.coverage:.0%} of the step")
    if ph.graph_step_time is not None:
        g = ph.graph_step_time
        what = "CUDA-graph decode step" if device.startswith("cuda") else \
            "decode step (no CUDA graph on a CPU: the same step run eagerly)"
        out.print(f"  {what}, replayed back to back: {g.median_ms:.3f} ms (median of {g.samples}, min {g.min_ms:.3f}, "
                  f"max {g.max_ms:.3f}); the program's statements timed one by one sum to {ph.attributed_ms:.3f} ms",
                  soft_wrap=True)
    if ph.hf_step_time is not None:
        ratio = ph.hf_step_time.median_ms / st.median_ms if st.median_ms > 0 else float("nan")
        out.print(f"  HF baseline: {ph.hf_step_time.median_ms:.3f} ms per step ({ratio:.2f}x the engine's time)")
    hf = {v.name: v for v in ph.versus_hf}
    layers = Table(title=f"{ph.phase}: top layers", title_justify="left")
    layers.add_column("layer", no_wrap=True)
    for col in ("median ms", "min", "max", "share"):
        layers.add_column(col, justify="right")
    layers.add_column("", no_wrap=True)
    if hf:
        layers.add_column("HF ms", justify="right")
        layers.add_column("HF / engine", justify="right")
    for r in ph.top_layers:
        cells = [r.name, _ms(r.time.median_ms), _ms(r.time.min_ms), _ms(r.time.max_ms), f"{r.share:.1%}", _bar(r.share)]
        if hf:
            v = hf.get(r.name)
            cells += [_ms(v.hf_ms) if v else "", f"{v.speedup:.2f}" if v and v.speedup else ""]
        layers.add_row(*cells)
    out.print(layers)
    kinds = Table(title=f"{ph.phase}: by op kind", title_justify="left")
    kinds.add_column("kind", no_wrap=True)
    for col in ("median ms", "share"):
        kinds.add_column(col, justify="right")
    kinds.add_column("", no_wrap=True)
    for r in ph.kinds:
        kinds.add_row(r.name, _ms(r.time.median_ms), f"{r.share:.1%}", _bar(r.share))
    out.print(kinds)
    out.print(_compute_table(ph.phase, ph.compute))


def _compute_table(phase: str, rows: list[Row]) -> Table:
    t = Table(title=f"{phase}: slowest GEMMs and attention", title_justify="left")
    t.add_column("node", no_wrap=True)
    t.add_column("op", no_wrap=True)
    for col in ("ms", "FLOP", "FLOP/s", "bytes", "B/s"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(r.name, r.op, _ms(r.time.median_ms), _si(r.flops), _si(r.tflops and r.tflops * 1e12),
                  _si(r.bytes), _si(r.gbps and r.gbps * 1e9))
    return t


COMMANDS = [profile_command]
