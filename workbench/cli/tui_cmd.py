"""`wb tui`: the interactive workbench over an engine, a checkpoint, the default model or a saved session."""

from __future__ import annotations

from pathlib import Path

import click

from workbench.errors import WorkbenchError
from workbench.runtime.backends import BACKEND_NAMES, resolve_device

_MODES = {"accumulated": ("accumulated",), "local": ("local",), "both": ("accumulated", "local")}


def _items(values: tuple[str, ...]) -> list[str]:
    return [item for v in values for item in v.split()]


@click.command("tui")
@click.argument("target", required=False)
@click.option("--layer", "layers", multiple=True, help="Names to diff (repeatable): 12.attn, '*.mlp', layers.3-7, all. "
              "Default all; mark more from inside with k.")
@click.option("--steps", default="4", show_default=True,
              help="N = the context phase (0) and generation steps 1..N, or a list such as 0,3,5-7.")
@click.option("--mode", type=click.Choice(list(_MODES)), default="both", show_default=True,
              help="accumulated: the engine end to end; local: each node fed HF's inputs; both (m switches).")
@click.option("--prompt", default=None, help="Prompt text (default: the diff's default prompt).")
@click.option("--atol", multiple=True,
              help="VALUE or PATTERN:VALUE items, e.g. '1e-3 layers.*.mlp:1e-2'. Default 1e-5.")
@click.option("--rtol", multiple=True, help="VALUE or PATTERN:VALUE items, like --atol. Default 1e-5.")
@click.option("--error-stat", default="elementwise", show_default=True,
              help="elementwise, max, mean, median or quantile: the statistic checked against the tolerances.")
@click.option("--dtype", default="fp32", show_default=True, help="dtype when building from a checkpoint.")
@click.option("--baseline-dtype", default=None, help="dtype of the HF model (default: the engine's).")
@click.option("--profile/--no-profile", default=True, show_default=True, help="Also time the engine (timeline tab).")
@click.option("--repeats", default=3, show_default=True, type=int, help="Timed runs of every step when profiling.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None,
              help="torch: the reference executor; cuda: the fast path (Triton plugins, paged KV cache, CUDA-graph "
                   "decode steps; needs a GPU, or TRITON_INTERPRET=1 with --device cpu). Runs the diff, the profile "
                   "and every rerun (b switches inside). Default: torch, or the backend a session recorded.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda for --backend cuda, else cpu).")
def tui_command(target, layers, steps, mode, prompt, atol, rtol, error_stat, dtype, baseline_dtype, profile,
                repeats, backend, device):
    """Step through an engine's diff against HF, its timeline and its tokens, interactively.

    TARGET is an engine directory, an HF checkpoint directory (built and cached), a session
    file (.wbs, no model needed when it holds tensors), or nothing (the default model).
    The diff and the profile run inside the app, in a background worker. Press ? for keys.
    """
    from workbench.inspect.diff import parse_steps
    from workbench.inspect.tolerances import Tolerances
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.jobs import Target

    tol = Tolerances.parse(_items(atol), _items(rtol), error_stat)
    if repeats < 1:
        raise WorkbenchError(f"--repeats {repeats}: must be at least 1")
    is_session = target is not None and target.endswith(".wbs")
    if backend is not None or device is not None or not is_session:
        # a session opens without its model: its recorded backend is checked only when something reruns
        resolve_device(backend or "torch", device)
    if is_session:
        from workbench.inspect.session_file import load_session

        load_session(target, with_tensors=False)  # a bad file fails here, in one line, before the screen opens
        spec = Target(session=Path(target), backend=backend, device=device)
    else:
        if target is not None and not Path(target).is_dir():
            raise WorkbenchError(f"{target}: no such engine directory, checkpoint directory or session file (.wbs)")
        spec = Target(model=target, dtype=dtype, patterns=list(layers) or None, steps=tuple(parse_steps(steps)),
                      modes=_MODES[mode], prompt=prompt, tolerances=tol, profile=profile, repeats=repeats,
                      baseline_dtype=baseline_dtype, backend=backend, device=device)
    WorkbenchApp(spec).run()


COMMANDS = [tui_command]
