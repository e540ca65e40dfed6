"""`wb quant-report` and `wb bisect`: which layers quantization hurts, and what to keep in higher precision."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from workbench.cli.common import console, out
from workbench.cli.quant_options import quant_options
from workbench.inspect import quant_report as qr


def _model_option(fn):
    fn = click.argument("model", required=False)(fn)
    fn = click.option("--dtype", default="fp32", show_default=True, help="Engine dtype when MODEL is a checkpoint.")(fn)
    fn = click.option("-p", "--prompt", "prompts", multiple=True, help="Text to measure on (repeatable); default: built-in text.")(fn)
    fn = click.option("--eval-samples", default=2, show_default=True, type=int, help="Pieces of the built-in text to measure on.")(fn)
    fn = click.option("--eval-seq-len", default=128, show_default=True, type=int, help="Tokens per piece.")(fn)
    fn = click.option("--mode", type=click.Choice(qr.MODES), default="restore", show_default=True,
                      help="restore: all quantized but one layer; isolate: only one layer quantized.")(fn)
    fn = click.option("--json", "json_path", default=None,
                      help="Write the report as JSON to this file ('-': print it instead of the tables).")(fn)
    return fn


def _emit_json(json_path: str | None, data: dict) -> bool:
    """Write (or print) the JSON report; True when the tables should be skipped."""
    if json_path is None:
        return False
    text = json.dumps(data, indent=1)
    if json_path == "-":
        click.echo(text)
        return True
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    console.print(f"[dim]wrote {path}[/]")
    return False


def _prepare(model, quant, dtype, prompts, eval_samples, eval_seq_len):
    if model is None:
        from workbench.default_model import default_checkpoint

        with console.status("preparing the default model..."):
            model = default_checkpoint()
    from workbench.builder.config import canonical_dtype

    with console.status("building the full-precision and quantized networks (calibrating if needed)..."):
        pair = qr.prepare(model, quant, dtype=canonical_dtype(dtype))
    return pair, qr.eval_sequences(pair, list(prompts), samples=eval_samples, seq_len=eval_seq_len)


def _closeness(c) -> str:
    return f"KL {c.kl:.4g} nats/token, top-1 agreement {c.top1_agreement:.1%}"


def _layer_table(layers, mode: str, top: int | None) -> Table:
    title = ("error each layer adds (everything quantized but it)" if mode == "restore"
             else "error of each layer quantized alone")
    t = Table(title=title)
    for col in ("rank", "layer", "kernel", "added KL", "share", "variant top-1"):
        t.add_column(col, justify="right" if col not in ("layer", "kernel") else "left")
    for i, r in enumerate(layers[:top] if top else layers, 1):
        t.add_row(str(i), r.name, r.method, f"{r.added_kl:.4g}", f"{r.share:.1%}", f"{r.variant.top1_agreement:.1%}")
    return t


def _outlier_table(outliers, top: int) -> Table:
    t = Table(title="activation outlier channels (calibration max |x| vs the median channel)")
    for col in ("input of", "median", "max", "max/median", "outlier channels (max |x|)"):
        t.add_column(col, justify="left" if col[0] in "io" else "right")
    for o in outliers[:top]:
        chans = ", ".join(f"{c} ({a:.3g})" for c, a in zip(o.channels[:3], o.amax[:3])) or "-"
        t.add_row(o.name, f"{o.median_amax:.3g}", f"{o.max_amax:.3g}", f"{o.ratio:.0f}x", chans)
    return t


def _bisection_lines(b) -> list[str]:
    lines = [f"bisection (first prefix reaching {b.fraction:.0%} of the full error): "
             f"[bold]{b.culprit or 'none'}[/]"]
    for s in b.steps:
        lines.append(f"  first {s.count} layers (through {s.last_layer}): {_closeness(s.closeness)}")
    return lines


@click.command("quant-report")
@_model_option
@click.option("--top", default=15, show_default=True, type=int, help="Rows of each table.")
@click.option("--outlier-threshold", default=8.0, show_default=True, type=float,
              help="A channel is an outlier when its max |x| is this many times the median channel's.")
@click.option("--max-suggestions", default=3, show_default=True, type=int)
@quant_options
def quant_report_command(model, dtype, prompts, eval_samples, eval_seq_len, mode, json_path, top, outlier_threshold,
                         max_suggestions, quant):
    """Rank the quantized layers of MODEL by the error they add, show outlier channels, suggest --quant-exclude.

    MODEL is a quantized engine, or an engine or checkpoint dir with --quant MODE (default: SmolLM2).
    Costs one forward pass over the evaluation tokens per quantized layer.
    """
    pair, seqs = _prepare(model, quant, dtype, prompts, eval_samples, eval_seq_len)
    with console.status(f"measuring {len(pair.layers)} layers ({mode})..."):
        report = qr.quant_report(pair, seqs, mode=mode, outlier_threshold=outlier_threshold,
                                 max_suggestions=max_suggestions)
    if _emit_json(json_path, report.to_dict()):
        return
    out.print(f"[bold]{report.quantization}[/] over {report.eval_tokens} tokens: {_closeness(report.full)}")
    out.print(_layer_table(report.layers, mode, top))
    out.print(_outlier_table(report.outliers, top))
    if report.suggested_exclude:
        pats = " ".join(f"--quant-exclude {n}" for n in report.suggested_exclude)
        out.print(f"keep in higher precision: {', '.join(report.suggested_exclude)} -> {_closeness(report.with_suggestion)}")
        out.print(f"  wb build ... {pats}", markup=False, highlight=False)
    else:
        out.print("no single layer dominates the error; nothing to suggest")


@click.command("bisect")
@_model_option
@click.option("--top", default=10, show_default=True, type=int, help="Rows of the ranking.")
@click.option("--binary", is_flag=True, help="Also binary-search prefixes of layers for the culprit (log2 runs).")
@quant_options
def bisect_command(model, dtype, prompts, eval_samples, eval_seq_len, mode, json_path, top, binary, quant):
    """Find the layers whose quantization causes the error: restore (or quantize) one layer at a time.

    MODEL is a quantized engine, or an engine or checkpoint dir with --quant MODE (default: SmolLM2).
    """
    pair, seqs = _prepare(model, quant, dtype, prompts, eval_samples, eval_seq_len)
    with console.status(f"measuring {len(pair.layers)} layers ({mode})..."):
        ranking = qr.layer_ranking(pair, seqs, mode, binary=binary)
    if _emit_json(json_path, ranking.to_dict()):
        return
    layers, bis = ranking.layers, ranking.bisection
    out.print(f"[bold]{ranking.quantization}[/] over {ranking.eval_tokens} tokens: {_closeness(ranking.full)}")
    if layers:
        out.print(f"most harmful layer: [bold]{layers[0].name}[/] ({layers[0].share:.0%} of the error)")
    out.print(_layer_table(layers, mode, top))
    for line in _bisection_lines(bis) if bis else []:
        out.print(line)


COMMANDS = [quant_report_command, bisect_command]
