"""`wb diff`: an engine's tensors against the HF model it was built from, as a table in layer order."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from rich.console import Console

from workbench.cli.common import console, out, resolve_engine
from workbench.errors import WorkbenchError
from workbench.fsutil import atomic_write
from workbench.runtime.backends import BACKEND_NAMES, resolve_device

_MODES = ("accumulated", "local", "both")


def _items(values: tuple[str, ...]) -> list[str]:
    """`--atol "1e-3 layers.*.mlp:1e-2"` and repeated `--atol` both give one item per token."""
    return [item for v in values for item in v.split()]


def _num(x: float) -> str:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return "0" if x == 0 else f"{x:.3g}"


def _cos(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.6f}"


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def render_report(report, divergence=None) -> Table:
    """A Rich table of one report: a row per name, pass/fail coloured, the first failure and jump marked."""
    n_pass = sum(r.passed for r in report.rows)
    where = "context phase" if report.step == 0 else f"generation step {report.step}"
    title = (f"{report.mode} diff, {where} ({len(report.positions)} position{'s' * (len(report.positions) > 1)}): "
             f"{n_pass}/{len(report.rows)} pass")
    table = Table(title=title, title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for col in ("max |err|", "mean |err|", "max rel", "rel L2", "cosine", "outside"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("")
    for r in report.rows:
        m = r.metrics
        result = Text("pass", style="green") if r.passed else Text("FAIL", style="bold red")
        note = ""
        if divergence is not None and r.name == divergence.first_failing:
            note = "◀ first failure"
        if divergence is not None and r.name == divergence.first_jump:
            note = (note + ", " if note else "◀ ") + f"error jumps ×{_num(divergence.jump_ratio)}"
        outside = f"{m.frac_outside * 100:.3g}%" if m.frac_outside else "0"
        table.add_row(r.name, result, _num(m.max_abs_err), _num(m.mean_abs_err), _num(m.max_rel_err),
                      _num(m.rel_l2), _cos(m.cosine), outside, Text(note, style="yellow"),
                      style=None if r.passed else "red")
    return table


def _divergence_line(d) -> str:
    where = f"{d.mode}, step {d.step}"
    if d.first_failing is None and d.first_jump is None:
        return f"[green]{where}: every name passes, no error jump[/]"
    parts = []
    if d.first_failing:
        parts.append(f"first failure [bold red]{d.first_failing}[/] ({d.first_failing_reason})")
    if d.first_jump:
        parts.append(f"first error jump [bold yellow]{d.first_jump}[/] (rel L2 {_num(d.jump_value)}, "
                     f"×{_num(d.jump_ratio)} the largest before it)")
    else:
        parts.append(f"no rel L2 jump over ×{d.jump_factor:g}")
    return f"{where}: " + "; ".join(parts)


def _token_lines(t) -> list[str]:
    if not t.diverged:
        return [f"[green]tokens: the engine's greedy choice matches HF's at all {t.steps_checked} steps "
                f"(0..{t.steps_checked - 1})[/]"]
    return [
        f"[bold red]tokens diverge at step {t.step}[/] (position {t.position}; steps 0..{t.step - 1} agree)",
        f"  HF     chose {t.hf_token} {t.hf_text!r} logprob {t.hf_logprob:.4f}; the engine gives it {t.engine_logprob_of_hf_token:.4f}",
        f"  engine chose {t.engine_token} {t.engine_text!r} logprob {t.engine_logprob:.4f}; HF gives it {t.hf_logprob_of_engine_token:.4f}",
    ]


def _print_table(table: Table) -> None:
    # Piped output gets no terminal width; 80 columns would cut the names, so give tables room.
    (out if out.is_terminal else Console(width=160)).print(table)


def _modes(mode: str) -> tuple[str, ...]:
    return ("accumulated", "local") if mode == "both" else (mode,)


@click.command("diff")
@click.argument("model", required=False)
@click.option("--layer", "layers", multiple=True, help="Names to diff (repeatable): 12.attn, '*.mlp', layers.3-7, all. Default all.")
@click.option("--first-divergence", is_flag=True, help="Find the first failing name, the first error jump, and the first generated token that differs.")
@click.option("--mode", type=click.Choice(_MODES), default="accumulated", show_default=True,
              help="accumulated: the engine end to end; local: each node fed HF's inputs; both.")
@click.option("--prompt", default=None, help="Prompt text (tokenized with the engine's tokenizer).")
@click.option("--token-ids", default=None, help="The prompt as token ids instead, e.g. 1,17,42 (for models without a tokenizer).")
@click.option("--steps", default=None, help="Steps to diff: N = the context phase (0) and generation steps 1..N, or a "
              "list such as 0,3,5-7. Default 0. With --first-divergence, N is how many steps to search for a "
              "differing token (default 16; layers are diffed at step 0), and a list is diffed as given.")
@click.option("--atol", multiple=True, help="VALUE or PATTERN:VALUE items, e.g. '1e-3 layers.*.mlp:1e-2'. Default 1e-5.")
@click.option("--rtol", multiple=True, help="VALUE or PATTERN:VALUE items, like --atol. Default 1e-5.")
@click.option("--error-stat", default="elementwise", show_default=True,
              help="elementwise, max, mean, median or quantile: the error statistic checked against the tolerances.")
@click.option("--error-quantile", default=0.99, show_default=True, type=float, help="Quantile for --error-stat quantile.")
@click.option("--jump-factor", default=10.0, show_default=True, type=float, help="An error jump: rel L2 over this many times the largest before it.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the full report as JSON.")
@click.option("--dtype", default="fp32", show_default=True, help="dtype when building from a checkpoint.")
@click.option("--baseline", "baseline_dir", type=click.Path(path_type=Path), default=None,
              help="The HF checkpoint to compare with (default: the one the engine was built from).")
@click.option("--baseline-dtype", default=None, help="dtype of the HF model (default: the engine's).")
@click.option("--save-session", "session_path", type=click.Path(path_type=Path), default=None,
              help="Record this diff as a session file (NAME.wbs) that `wb replay` reruns.")
@click.option("--with-tensors", is_flag=True, help="With --save-session: keep the compared tensors beside it.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="torch", show_default=True,
              help="torch: the reference executor; cuda: the fast path (Triton plugins, paged KV cache, CUDA-graph "
                   "decode steps; needs a GPU, or TRITON_INTERPRET=1 with --device cpu).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda for --backend cuda, else cpu).")
@click.pass_context
def diff_command(ctx, model, layers, first_divergence, mode, prompt, steps, atol, rtol, error_stat, error_quantile,
                 jump_factor, json_path, dtype, baseline_dir, baseline_dtype, session_path, with_tensors, token_ids,
                 backend, device):
    """Diff MODEL (an engine dir or a checkpoint dir; default: SmolLM2-135M-Instruct) against its HF model.

    Exit status: 0 when every name passes, 1 when any fails (or a token diverges), 2 on bad input.
    """
    from workbench.builder.config import canonical_dtype
    from workbench.inspect.baseline import Baseline
    from workbench.inspect.diff import DEFAULT_PROMPT, diff, parse_steps, select_names
    from workbench.inspect.divergence import DEFAULT_SEARCH_STEPS, layer_divergence
    from workbench.inspect.divergence import first_divergence as find_first_divergence
    from workbench.inspect.tolerances import Tolerances

    tol = Tolerances.parse(_items(atol), _items(rtol), error_stat, error_quantile)
    step_list = parse_steps(steps)
    if session_path is not None and not session_path.name.endswith(".wbs"):
        raise WorkbenchError(f"--save-session {session_path}: session files end in .wbs")
    if session_path is not None and baseline_dir is not None:
        raise WorkbenchError("--save-session cannot record a diff against another --baseline checkpoint; "
                             "replay compares an engine with the checkpoint it was built from")
    ids_given = _token_ids(token_ids)
    if ids_given is not None and prompt is not None:
        raise WorkbenchError("give --prompt or --token-ids, not both")
    if with_tensors and session_path is None:
        raise WorkbenchError("--with-tensors needs --save-session FILE")
    if jump_factor <= 1:
        raise WorkbenchError(f"--jump-factor {jump_factor}: must be > 1")
    device = resolve_device(backend, device)
    engine = resolve_engine(model, dtype)
    if model is not None and (Path(model) / "engine.json").is_file() and ctx.get_parameter_source("dtype").name != "DEFAULT" \
            and canonical_dtype(dtype) != engine.build_config.dtype:
        raise WorkbenchError(f"{model}: the engine is {engine.build_config.dtype}; --dtype {dtype} applies only when "
                             "building from a checkpoint")
    select_names(engine, list(layers))  # bad patterns fail before any model loads
    tol.check_patterns(select_names(engine, None))
    baseline = Baseline.for_engine(engine, baseline_dir, dtype=baseline_dtype)
    for w in baseline.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    kwargs = dict(modes=_modes(mode), prompt=prompt, token_ids=ids_given, tolerances=tol, baseline=baseline,
                  device=device, backend=backend)
    with console.status(f"running {Path(baseline.checkpoint).name} in transformers ({baseline.dtype}) and the engine "
                        f"({backend} backend on {device})..."):
        if first_divergence:
            search = step_list[-1] if steps is not None else DEFAULT_SEARCH_STEPS
            explicit = steps is not None and any(c in str(steps) for c in ",- ")
            result = find_first_divergence(engine, list(layers) or None, steps=step_list if explicit else [0],
                                      search_steps=search, jump_factor=jump_factor, **kwargs)
            reports, passed = result.reports, result.passed
        elif with_tensors:  # keep the run: its tensors go into the session
            from workbench.inspect.diff import capture, compare, prepare

            names, ids, _ = prepare(engine, list(layers) or None, prompt=prompt, token_ids=ids_given, tolerances=tol,
                                    baseline=baseline, baseline_dtype=None, device="cpu")
            run = capture(engine, names, token_ids=ids, modes=_modes(mode), steps=step_list, baseline=baseline,
                          prompt=None if ids_given else prompt if prompt is not None else DEFAULT_PROMPT,
                          device=device, backend=backend)
            reports = [compare(run, s, m, tol) for s in step_list for m in _modes(mode)]
            passed = all(r.passed for r in reports)
        else:
            reports = diff(engine, list(layers) or None, steps=step_list, **kwargs)
            passed = all(r.passed for r in reports)
    first = reports[0]
    console.print(f"[dim]{first.model.get('checkpoint')} ({first.model.get('dtype')}) vs engine "
                  f"{first.engine.get('path')} ({first.engine.get('dtype')}, {first.engine.get('backend')} backend on "
                  f"{first.engine.get('device')}); prompt of "
                  f"{len(first.token_ids) - first.step} tokens{'' if prompt else ' (default)'}[/]", soft_wrap=True)
    if first_divergence:
        for d in result.layers:
            out.print(_divergence_line(d), soft_wrap=True)
        for line in _token_lines(result.tokens):
            out.print(line, soft_wrap=True)
        shown = list(zip(result.tokens.reports, result.tokens.layers)) or \
            [next(((r, d) for r, d in zip(result.reports, result.layers) if not r.passed or d.first_jump),
                  (result.reports[0], result.layers[0]))]
        for report, d in shown:
            _print_table(render_report(report, d))
    else:
        for report in reports:
            _print_table(render_report(report, layer_divergence(report, jump_factor=jump_factor)))
    n_fail = sum(len(r.failures) for r in reports)
    summary = ("[green]all names pass[/]" if passed else f"[red]{n_fail} failing row{'s' * (n_fail != 1)}[/]" if n_fail
               else "[red]tokens diverge[/]")
    stat = tol.error_stat + (f" p{tol.quantile * 100:g}" if tol.error_stat == "quantile" else "")
    out.print(f"{summary} (atol {_fmt_table(tol.atol)}, rtol {_fmt_table(tol.rtol)}, {stat})", soft_wrap=True)
    if json_path is not None:
        data = result.to_dict() if first_divergence else {"passed": passed, "reports": [r.to_dict() for r in reports]}
        data["prompt"] = prompt if prompt is not None else DEFAULT_PROMPT
        _write_json(json_path, data)
        console.print(f"[dim]wrote {json_path}[/]")
    if session_path is not None:
        from workbench.inspect.replay import record
        from workbench.inspect.session_file import save_session

        session = record(engine, reports, run=run if with_tensors else None, device=device, title=prompt or "wb diff")
        save_session(session, session_path)
        console.print(f"[dim]saved session {session_path} (replay with `wb replay {session_path}`)[/]")
    sys.exit(0 if passed else 1)


def _token_ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        ids = [int(t) for t in text.replace(" ", ",").split(",") if t.strip()]
    except ValueError:
        raise WorkbenchError(f"--token-ids {text!r}: expected integers such as 1,17,42") from None
    if not ids or min(ids) < 0:
        raise WorkbenchError(f"--token-ids {text!r}: expected non-negative integers such as 1,17,42")
    return ids


def _fmt_table(table: dict[str, float]) -> str:
    return " ".join(f"{p}:{v:g}" if p else f"{v:g}" for p, v in table.items())


COMMANDS = [diff_command]
