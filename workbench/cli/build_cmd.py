"""`wb build` and `wb inspect`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from workbench.builder.build import build_engine
from workbench.builder.config import BuildConfig
from workbench.builder.engine import load_engine
from workbench.builder.summary import summarize
from workbench.cli.common import build_progress, console, out
from workbench.cli.quant_options import quant_line, quant_options
from workbench.runtime import calibration  # noqa: F401  (quantized builds calibrate through it)


@click.command("build")
@click.argument("checkpoint_dir", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="Engine directory to write.")
@click.option("--dtype", default="fp32", show_default=True, help="fp32, fp16 or bf16.")
@click.option("--max-batch-size", default=8, show_default=True, type=int)
@click.option("--max-seq-len", default=2048, show_default=True, type=int)
@click.option("--kv-page-size", default=16, show_default=True, type=int, help="Tokens per KV-cache block.")
@click.option("--mark", "marks", multiple=True, help="Mark names as extra outputs: 12.attn, '*.mlp', layers.3-7, all.")
@quant_options
def build_command(checkpoint_dir, output, dtype, max_batch_size, max_seq_len, kv_page_size, marks, quant):
    """Build an engine from an HF checkpoint directory (config.json + safetensors); default: SmolLM2-135M-Instruct."""
    if checkpoint_dir is None:
        from workbench.default_model import default_checkpoint

        with console.status("preparing the default model (converted once from GGUF)..."):
            checkpoint_dir = default_checkpoint()
    config = BuildConfig(dtype=dtype, max_batch_size=max_batch_size, max_seq_len=max_seq_len,
                         kv_page_size=kv_page_size, marked=list(marks), quant=quant)
    with build_progress(f"building {checkpoint_dir.name}") as progress:
        engine = build_engine(checkpoint_dir, output, config, progress=progress)
    s = summarize(engine)
    console.print(f"[green]built[/] {output}: {s.architecture}, {s.num_layers} layers, {s.dtype}, "
                  f"{s.weight_bytes / 2**20:.1f} MiB, {len(s.marked)} marked outputs")
    if quant is not None:
        console.print(quant_line(engine.network))


@click.command("inspect")
@click.argument("engine_dir", type=click.Path(path_type=Path))
@click.option("--graph", is_flag=True, help="Also print the graph, one node per line.")
def inspect_command(engine_dir, graph):
    """Summarise an engine: layers, nodes, parameters, bytes, marked outputs."""
    engine = load_engine(engine_dir)
    s = summarize(engine)
    table = Table(title=f"engine {engine_dir}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("architecture", s.architecture), ("dtype", s.dtype), ("layers", str(s.num_layers)),
        ("nodes", f"{s.num_nodes} ({', '.join(f'{k} {v}' for k, v in s.ops.items())})"),
        ("parameters", f"{s.num_parameters:,}"), ("weight bytes", f"{s.weight_bytes:,} ({s.weight_bytes / 2**20:.1f} MiB)"),
        ("limits", f"batch {s.max_batch_size}, sequence {s.max_seq_len}, KV page {s.kv_page_size}"),
        ("marked outputs", ", ".join(s.marked) if s.marked else "none"), ("built from", s.source),
    ]
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)
    if graph:
        out.print(engine.network.dump(), markup=False, highlight=False)


COMMANDS = [build_command, inspect_command]
