"""`wb tui --backend cuda`: the diff, the profile, saved sessions and reruns on the fast path (Triton's interpreter
on a CPU), the header naming the backend, `b` switching it, and one-line refusals where a backend cannot run."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # before Triton's first import: it reads the switch then
    os.environ.setdefault("TRITON_INTERPRET", "1")

from click.testing import CliRunner  # noqa: E402
from textual.widgets import Input  # noqa: E402

from tests.tui.helpers import loaded, plain, replaced, wait_for  # noqa: E402
from workbench.cli import main  # noqa: E402
from workbench.inspect.profiler import ProfileConfig  # noqa: E402
from workbench.inspect.session_file import load_session  # noqa: E402
from workbench.tui.app import WorkbenchApp  # noqa: E402
from workbench.tui.jobs import Target  # noqa: E402

pytestmark = [pytest.mark.anyio,
              pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                 reason="the cuda backend needs a GPU or Triton's interpreter")]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SIZE = (120, 40)
NO_GPU = not torch.cuda.is_available()


def engine_app(engine_dir, **kwargs) -> WorkbenchApp:
    spec = dict(model=str(engine_dir), patterns=["layers.0", "logits"], steps=(0, 1), profile=False, device=DEV)
    return WorkbenchApp(Target(**{**spec, **kwargs}))


def quick_profile(engine, prompt_len, repeats=3):
    """A smaller profile than the TUI's: the interpreter runs every kernel launch in Python."""
    return ProfileConfig(prompt_len=4, steps=1, repeats=1, warmup=0, nvtx="off")


async def test_the_cuda_backend_diffs_profiles_and_saves_and_b_switches_to_torch(tiny_engine_dir, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setattr("workbench.tui.jobs.profile_config", quick_profile)
    app = engine_app(tiny_engine_dir, backend="cuda", profile=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        ws = screen.ws
        assert ws.backend == "cuda" and screen.backend == "cuda"
        assert {r.engine["backend"] for r in ws.reports.values()} == {"cuda"}
        assert all(r.passed for r in ws.reports.values())  # fp32 fast path against fp32 HF
        assert ws.profile.backend == "cuda" and ws.profile.phases["generation"].graph_step_time is not None
        assert f"cuda backend{' on cpu' if NO_GPU else ''} · accumulated" in screen.sub_title
        await pilot.press("2")
        timeline = plain(screen, "#timeline-body")
        assert "cuda backend" in timeline and "fused: " in timeline and "final_norm in logits" in timeline
        assert "as the decode graph replays" in timeline
        out = tmp_path / "fast.wbs"
        await pilot.press("w")
        app.screen.query_one(Input).value = str(out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: out.is_file() and not screen.busy)
        screen.target.profile = False  # the rerun skips timing, to keep the test short
        await pilot.press("b")
        assert screen.backend == "torch"  # the header says "(reruns: torch)" until the run ends
        await replaced(pilot, screen, ws)
        assert screen.ws.backend == "torch" and {r.engine["backend"] for r in screen.ws.reports.values()} == {"torch"}
        assert "torch backend" in screen.sub_title and "reruns" not in screen.sub_title
    saved = load_session(out)
    assert saved.backend == "cuda" and saved.environment["device"].startswith(DEV) and saved.tensors
    assert saved.profile["backend"] == "cuda"


async def test_a_session_reruns_on_its_recorded_backend_unless_told(session_file, monkeypatch):
    app = WorkbenchApp(Target(session=session_file, backend="cuda", device=DEV, profile=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert screen.ws.backend == "torch" and screen.backend == "cuda"
        assert "torch backend (reruns: cuda)" in screen.sub_title
        old = screen.ws
        await pilot.press("r")
        await replaced(pilot, screen, old, timeout=120)
        assert screen.ws.backend == "cuda" and screen.ws.label == "synthetic.wbs"
        assert "(reruns" not in screen.sub_title


@pytest.mark.skipif(not NO_GPU, reason="a GPU runs the cuda backend")
async def test_b_says_in_one_line_why_the_cuda_backend_cannot_run_here(session_app, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    async with session_app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        notes = []
        monkeypatch.setattr(screen, "notify", lambda message, **kw: notes.append((message, kw)))
        await pilot.press("b")
        (message, kw), = notes
        assert kw["severity"] == "error" and "no CUDA GPU" in message and "TRITON_INTERPRET=1" in message
        assert "\n" not in message and "b switches the backend" in message
        assert screen.backend == "torch" and not screen.busy and "reruns" not in screen.sub_title


def test_cli_takes_backend_and_device_and_refuses_what_cannot_run(tiny_engine_dir, session_file, monkeypatch):
    opened = []
    monkeypatch.setattr(WorkbenchApp, "run", lambda self: opened.append(self.target))
    runner = CliRunner()
    res = runner.invoke(main, ["tui", str(tiny_engine_dir), "--backend", "cuda", "--device", DEV])
    assert res.exit_code == 0, res.output
    assert opened[-1].backend == "cuda" and opened[-1].device == DEV
    res = runner.invoke(main, ["tui", str(session_file)])  # a session keeps its recorded backend
    assert res.exit_code == 0 and opened[-1].backend is None and opened[-1].device is None
    res = runner.invoke(main, ["tui", str(tiny_engine_dir), "--backend", "tensorrt"])
    assert res.exit_code == 2 and "'tensorrt' is not one of 'torch', 'cuda'" in res.output
    assert "--backend [torch|cuda]" in runner.invoke(main, ["tui", "--help"]).output
    if NO_GPU:
        res = runner.invoke(main, ["tui", str(tiny_engine_dir), "--device", "cuda"])
        assert res.exit_code == 2 and res.output.startswith("error: --device cuda: this machine has no CUDA GPU")
        monkeypatch.delenv("TRITON_INTERPRET")
        for target in (tiny_engine_dir, session_file):
            res = runner.invoke(main, ["tui", str(target), "--backend", "cuda", "--device", "cpu"])
            assert res.exit_code == 2 and "set TRITON_INTERPRET=1" in res.output and res.output.count("\n") == 1
    assert len(opened) == 2  # nothing refused opened the screen
