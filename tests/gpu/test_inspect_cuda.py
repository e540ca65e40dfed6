"""`wb diff` and `wb profile` on the cuda backend on a GPU: the fast path (compiled program, paged KV cache,
CUDA-graph decode steps) against HF and the torch backend, its timings per canonical name and per graph replay."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():  # before importing Triton (see workbench/plugins/common.py)
    pytest.skip("needs a CUDA device", allow_module_level=True)

from click.testing import CliRunner  # noqa: E402

from tests.inspect.conftest import TOKENS  # noqa: E402
from workbench.cli import main  # noqa: E402
from workbench.inspect.diff import capture, compare  # noqa: E402
from workbench.inspect.tolerances import Tolerances  # noqa: E402
from workbench.names import canonical_names  # noqa: E402

pytestmark = pytest.mark.gpu
TIGHT = Tolerances.parse(["1e-5"], ["1e-5"])
STEPS = [0, 1, 4]


def _runs(engine, baseline=None, baseline_dtype=None):
    from workbench.inspect.baseline import Baseline

    baseline = baseline or Baseline.for_engine(engine, dtype=baseline_dtype)
    return {b: capture(engine, canonical_names(3), token_ids=TOKENS, modes=("accumulated", "local"), steps=STEPS,
                       baseline=baseline, device="cuda", backend=b) for b in ("torch", "cuda")}


def test_fp32_cuda_backend_passes_against_hf_and_matches_the_torch_backend(engine_fp32, baseline_fp32):
    runs = _runs(engine_fp32, baseline_fp32)
    assert runs["cuda"].engine["backend"] == "cuda" and runs["cuda"].engine["device"] == "cuda"
    for step in STEPS:
        for mode in ("accumulated", "local"):
            report = compare(runs["cuda"], step, mode, TIGHT)
            assert report.passed, (step, mode, [(r.name, r.verdict.reason) for r in report.failures])
    for mode in ("accumulated", "local"):
        for name in canonical_names(3):
            torch.testing.assert_close(runs["cuda"].engine_outputs[mode][name], runs["torch"].engine_outputs[mode][name],
                                       atol=1e-5, rtol=1e-5)


def test_bf16_cuda_backend_errors_stay_those_of_the_torch_backend(engine_bf16):
    runs = _runs(engine_bf16, baseline_dtype="fp32")
    for step in STEPS:
        fast, ref = (compare(runs[b], step, "accumulated") for b in ("cuda", "torch"))
        for a, b in zip(fast.rows, ref.rows):
            assert a.metrics.rel_l2 < 2 * b.metrics.rel_l2 + 1e-2, (step, a.name, a.metrics.rel_l2, b.metrics.rel_l2)


def test_profile_cuda_on_gpu_times_statements_and_the_graph(engine_bf16):
    from workbench.inspect.cuda_profile import profile_cuda
    from workbench.inspect.profiler import ProfileConfig

    report = profile_cuda(engine_bf16, ProfileConfig(prompt_len=64, steps=8, repeats=5, warmup=2), device="cuda")
    assert report.backend == "cuda" and report.device.startswith("cuda") and report.nvtx in ("nvtx", "torch")
    gen = report.phases["generation"]
    graph = gen.graph_step_time
    print(f"decode: graph replay {graph.median_ms:.4f} ms, session step {gen.step_time.median_ms:.4f} ms, "
          f"statements {gen.attributed_ms:.4f} ms; context {report.phases['context'].step_time.median_ms:.4f} ms")
    assert 0 < graph.median_ms < gen.step_time.median_ms * 1.5  # no host work between replays
    for ph in report.phases.values():
        assert list(ph.layers) == ["embed", "layers.0", "layers.1", "layers.2", "logits"]
        # the gate_up GEMV computes the post-attention add + norm too
        assert ph.nodes["layers.0.mlp.act"].op == "norm_swiglu_linear" and ph.nodes["layers.0.mlp.act"].tflops
        assert all(r.time.median_ms >= 0 for r in ph.nodes.values())


def test_cli_diff_profile_and_replay_on_the_cuda_backend(engine_fp32, tmp_path):
    session = tmp_path / "cuda.wbs"
    run = CliRunner().invoke(main, ["diff", str(engine_fp32.path), "--backend", "cuda", "--mode", "both", "--steps", "2",
                                    "--token-ids", "1,40,71,78,78,81", "--save-session", str(session)])
    assert run.exit_code == 0, run.output
    assert "cuda backend on cuda" in run.output
    prof = CliRunner().invoke(main, ["profile", str(engine_fp32.path), "--backend", "cuda", "--prompt-len", "32",
                                     "--steps", "4", "--repeats", "2", "--no-baseline"])
    assert prof.exit_code == 0, prof.output
    assert "cuda backend" in prof.output and "CUDA-graph decode step" in prof.output
    replayed = CliRunner().invoke(main, ["replay", str(session)])
    assert replayed.exit_code == 0 and "replay: 1 passed" in replayed.output, replayed.output
