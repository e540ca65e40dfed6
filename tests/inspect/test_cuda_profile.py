"""`wb profile --backend cuda` (Triton's interpreter on a CPU): the compiled program timed statement by statement
under canonical names, fused statements named once, costs folded in, the decode step replayed, and the CLI."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from workbench.cli import main
from workbench.inspect.profiler import ProfileConfig, ProfileReport
from workbench.inspect.timeline import chrome_trace, summarize_profile
from workbench.names import canonical_names

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the cuda backend needs a GPU or Triton's interpreter")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
QUICK = ProfileConfig(prompt_len=6, steps=2, repeats=2, warmup=1, threads=1)


@pytest.fixture(scope="module")
def engine(tiny_engine_dir):
    from workbench.builder.engine import load_engine

    return load_engine(tiny_engine_dir)  # tests/conftest's 2-layer Llama, fp32


@pytest.fixture(scope="module")
def report(engine):
    from workbench.inspect.cuda_profile import profile_cuda

    return profile_cuda(engine, QUICK, device=DEV)


def test_timed_program_computes_what_the_program_computes(engine):
    from workbench.inspect.cuda_profile import TimedProgram
    from workbench.runtime.attention_meta import AttentionMeta
    from workbench.runtime.cuda_executor import CudaExecutor

    timed = TimedProgram(CudaExecutor(engine, DEV))
    ids, pos = torch.tensor([3, 17, 42, 9]), torch.arange(4)
    plain = timed.run(ids, pos, AttentionMeta.prefill([4]))
    seen = []
    timed.node_hook = lambda name, thunk: seen.append(name) or thunk()
    hooked = timed.run(ids, pos, AttentionMeta.prefill([4]))
    torch.testing.assert_close(hooked["logits"], plain["logits"], rtol=0, atol=0)
    assert seen == [st.name for st in timed.statements] and seen[0] == "embed" and seen[-1] == "logits"
    assert timed.executor.program.fn is not None and "_hook" not in timed.executor.program.source  # put back
    by_name = {st.name: st for st in timed.statements}
    qkv = by_name["layers.1.attn.qkv"]  # the add + norm before it, inside its call
    assert qkv.values == ["layers.1.attn.qkv", "layers.0"] and qkv.op == "norm_linear"
    assert "layers.1.input_norm" in qkv.computes
    assert "layers.0.mlp.gate_up" in by_name["layers.0.mlp.act"].computes  # fused away: its cost goes here
    assert timed.fused["final_norm"] == "logits"


def test_rows_carry_canonical_names_and_fused_statements(report):
    assert report.backend == "cuda" and report.device.startswith(DEV)
    canon = canonical_names(2)
    for ph in report.phases.values():
        assert list(ph.layers) == ["embed", "layers.0", "layers.1", "logits"]  # final_norm is fused into logits
        # the last residual sum (layers.1) is computed inside the logits GEMV, with final_norm
        assert set(ph.names) <= set(canon) and {"embed", "layers.0.attn", "layers.1.mlp", "logits"} <= set(ph.names)
        assert all(n.startswith(("embed", "layers.", "logits")) for n in ph.nodes)
        assert ph.nodes["layers.1.attn.qkv"].op == "norm_linear" and ph.nodes["layers.1.attn.qkv"].kind == "gemm"
        assert ph.nodes["layers.0.attn.sdpa"].kind == "attention"
        swiglu = ph.nodes["layers.0.mlp.act"]
        assert swiglu.op == "norm_swiglu_linear" and swiglu.kind == "gemm" and swiglu.flops > 0
        assert ph.attributed_ms > 0 and ph.step_time.median_ms > 0
    ctx = report.phases["context"].nodes
    t, h, inter = QUICK.prompt_len, 64, 128
    assert ctx["layers.0.mlp.act"].flops == 2 * t * h * 2 * inter  # the gate_up GEMM it computes
    assert report.fused["layers.1.input_norm"] == "layers.1.attn.qkv" and report.fused["final_norm"] == "logits"


def test_the_decode_step_is_timed_as_generation_replays_it(report):
    gen = report.phases["generation"]
    assert gen.graph_step_time is not None and gen.graph_step_time.samples == QUICK.repeats
    assert gen.graph_step_time.median_ms > 0
    assert report.phases["context"].graph_step_time is None
    summary = summarize_profile(report)
    assert summary.backend == "cuda" and summary.phases[1].graph_step_time == gen.graph_step_time
    # canonical names only: each add + norm inside the projection that reads the norm
    assert summary.fused == {"layers.0.post_norm": "layers.0.mlp.act", "layers.0": "layers.1.attn.qkv",
                             "layers.1.input_norm": "layers.1.attn.qkv", "layers.1.post_norm": "layers.1.mlp.act",
                             "layers.1": "logits", "final_norm": "logits"}


def test_report_round_trips_and_traces(report):
    d = report.to_dict()
    again = ProfileReport.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d and again.phases["generation"].graph_step_time == report.phases["generation"].graph_step_time
    trace = chrome_trace(report)
    assert trace["otherData"]["backend"] == "cuda"
    assert {e["name"] for e in trace["traceEvents"] if e.get("cat") == "layer"} == {"layers.0", "layers.1"}


def test_cli_profile_backend_cuda(tiny_engine_dir, tmp_path):
    trace = tmp_path / "trace.json"
    args = ["profile", str(tiny_engine_dir), "--backend", "cuda", "--device", DEV, "--prompt-len", "4", "--steps", "2",
            "--repeats", "1", "--warmup", "0", "--no-baseline", "--trace", str(trace)]
    res = CliRunner().invoke(main, args, env={"WB_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    assert "cuda backend" in res.output and "layers.1.input_norm in layers.1.attn.qkv" in res.output
    assert "replayed back to back" in res.output and "statements timed one by one sum to" in res.output
    assert "norm_swiglu_line" in res.output  # the op column (cut to its width)
    assert json.loads(trace.read_text())["otherData"]["backend"] == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("args, message", [
    (["--backend", "cuda"], "--backend cuda: this machine has no CUDA GPU"),
    (["--backend", "cuda", "--device", "cpu"], "set TRITON_INTERPRET=1"),
])
def test_cli_profile_backend_cuda_without_a_usable_device(tiny_engine_dir, tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    res = CliRunner().invoke(main, ["profile", str(tiny_engine_dir), *args], env={"WB_CACHE": str(tmp_path / "c")})
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
