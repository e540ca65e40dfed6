"""`diff` on the cuda backend (Triton's interpreter on a CPU): it passes against HF under the torch backend's
tolerances and its tensors match the torch backend's; first divergence and the CLI take the backend too."""

from __future__ import annotations

import os

import pytest
import torch

from tests.inspect.conftest import TOKENS
from tests.inspect.test_diff import TIGHT
from workbench.inspect.diff import capture, compare, diff
from workbench.names import canonical_names

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the cuda backend needs a GPU or Triton's interpreter")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def test_cuda_backend_passes_against_hf_and_matches_the_torch_backend(engine_fp32, baseline_fp32):
    names = canonical_names(3)
    runs = {b: capture(engine_fp32, names, token_ids=TOKENS, modes=("accumulated", "local"), steps=[0, 1, 3],
                       baseline=baseline_fp32, device=DEV if b == "cuda" else "cpu", backend=b)
            for b in ("torch", "cuda")}
    fast = runs["cuda"]
    assert fast.engine["backend"] == "cuda" and fast.engine["device"].startswith(DEV)
    assert runs["torch"].engine["backend"] == "torch"
    for step in (0, 1, 3):
        for mode in ("accumulated", "local"):
            report = compare(fast, step, mode, TIGHT)
            assert report.names == names
            assert report.passed, [(r.name, r.verdict.reason) for r in report.failures]
            ref = compare(runs["torch"], step, mode, TIGHT)
            for a, b in zip(report.rows, ref.rows):
                assert a.metrics.rel_l2 < 1e-5 and b.metrics.rel_l2 < 1e-5
    for mode in ("accumulated", "local"):  # every position: the prompt step and the decode steps
        for name in names:
            a, b = fast.engine_outputs[mode][name], runs["torch"].engine_outputs[mode][name]
            assert a.shape == b.shape, name
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{mode} {n}: {m}")


def test_cuda_backend_finds_the_planted_fault(planted):
    from workbench.inspect.divergence import first_divergence

    engine, node = planted("scale_o_proj", 1)
    result = first_divergence(engine, modes=("local",), search_steps=2, token_ids=TOKENS, tolerances=TIGHT,
                              device=DEV, backend="cuda")
    assert result.reports[0].engine["backend"] == "cuda"
    assert result.layers[0].first_failing == node


def test_diff_takes_the_backend_and_refuses_one_that_cannot_run(engine_fp32, baseline_fp32, monkeypatch):
    from workbench.errors import WorkbenchError

    (report,) = diff(engine_fp32, "logits", token_ids=TOKENS[:6], tolerances=TIGHT, baseline=baseline_fp32,
                     device=DEV, backend="cuda")
    assert report.passed and report.engine["backend"] == "cuda"
    if not torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(WorkbenchError, match="TRITON_INTERPRET=1"):
            diff(engine_fp32, "logits", token_ids=TOKENS[:6], baseline=baseline_fp32, device="cpu", backend="cuda")
