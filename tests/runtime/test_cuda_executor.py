"""The `cuda` backend on the CPU (Triton's interpreter): compiled program, fusions, staged decode steps and
debug marks against the reference backend. tests/gpu runs the same on a GPU at full sizes, with graphs."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # before Triton's first import: it reads the switch then
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from workbench.builder.build import debug_engine  # noqa: E402
from workbench.runtime.executor import Executor  # noqa: E402
from workbench.runtime.session import GenerationConfig, GenerationSession  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
BATCH = [[1, 17, 42, 99, 3, 64, 7], [5, 9, 101], [127], [0, 44, 90, 23, 61, 18, 70, 4, 11, 12]]


def _cuda(engine, gemv: str = "table"):
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy

    return CudaExecutor(engine, DEV, gemv=GemvPolicy.parse(gemv))


@pytest.mark.parametrize("norm_fusion", ["off", "prologue"])
def test_program_fuses_and_reads_like_the_graph(batch_engines, monkeypatch, norm_fusion):
    from workbench.runtime import cuda_program

    monkeypatch.setattr(cuda_program, "NORM_FUSION", norm_fusion)
    ex = _cuda(batch_engines("llama_gqa"))
    src = ex.program.source
    if norm_fusion == "off":  # post_norm of each layer, input_norm of layer 1, final_norm: add + norm kernels
        assert src.count("_add_rms_norm(") == 4 and src.count("_swiglu_linear(") == 2
        assert ex.program.fusions["layers.1.input_norm"] == "add_rms_norm"
    else:  # the add + norm move into their projection's call
        assert "_add_rms_norm(" not in src
        assert src.count("_norm_swiglu_linear(") == 2 and src.count("_norm_linear(") == 2
        assert ex.program.fusions["layers.1.input_norm"] == "add_rms_norm_linear"
    assert src.count("_rope_attention(") == 2  # silu * up from gate_up's GEMV
    assert "_rope_qkv(" not in src  # rotated q and k alone only when something else reads them
    assert "_silu_and_mul(" not in src  # the activation alone is computed only when something reads it
    assert "_op(" not in src  # every op of the family has a direct line


@pytest.mark.parametrize("family", ["llama_gqa", "llama_mqa", "mistral_window", "qwen2_bias", "llama_tied"])
def test_forward_matches_reference(batch_engines, family):
    engine = batch_engines(family)
    ref = Executor(engine, DEV).forward(BATCH)
    for ex in (_cuda(engine), Executor(engine, DEV, backend="cuda")):  # compiled, and node by node
        out = ex.forward(BATCH)
        for a, b in zip(out, ref):
            assert torch.allclose(a["logits"], b["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["mistral_window"])
def test_session_greedy_matches_reference(batch_engines, family):
    engine = batch_engines(family)
    cfg = GenerationConfig(max_new_tokens=6, eos_token_ids=[])
    expected = GenerationSession(engine, device=DEV).generate(BATCH, cfg).token_ids
    ex = _cuda(engine, "triton-swiglu")  # decode steps (4 rows) through the Triton GEMV, the activation in gate_up's
    got = GenerationSession(engine, device=DEV, executor=ex).generate(BATCH, cfg)
    assert got.token_ids == expected
    # the device-side loop (one staged step per token, no host work in between) agrees
    cache = GenerationSession(engine, device=DEV, executor=ex).cache
    greedy = ex.generate_greedy(cache, BATCH, 6)
    assert greedy.tokens.tolist() == expected
    assert cache.num_used_blocks == 0


@pytest.mark.parametrize("norm_fusion", ["off", "prologue"])
def test_marks_change_nothing_and_match_the_reference(batch_engines, monkeypatch, norm_fusion):
    from workbench.runtime import cuda_program

    monkeypatch.setattr(cuda_program, "NORM_FUSION", norm_fusion)
    # half precision, where fusions could change roundings (fp16: Triton's interpreter rounds bf16 by truncation)
    engine = batch_engines("llama_gqa", "bfloat16" if DEV == "cuda" else "float16")
    dbg = debug_engine(engine, ["all"])
    plain, marked = _cuda(engine, "triton-swiglu"), _cuda(dbg, "triton-swiglu")
    assert "layers.0.mlp.gate_act" in dbg.marked
    assert "_silu(" in marked.program.source  # gate_act is fused away: computed on the side when marked
    assert marked.program.source.count("_swiglu_linear(") == 2  # the same kernels as the plain engine
    assert marked.program.source.count("_add_rms_norm(") == 4  # (prologue: the marked norms, on the side)
    a, b = plain.forward(BATCH), marked.forward(BATCH)
    ref = Executor(dbg, DEV).forward(BATCH)
    for x, y, r in zip(a, b, ref):
        assert torch.equal(x["logits"], y["logits"])
        for name in ("layers.0.attn.qkv", "layers.0.attn.core", "layers.1", "layers.1.mlp.gate_act", "final_norm"):
            err = (y[name].double() - r[name].double()).norm() / r[name].double().norm()
            assert err < 2e-2, name
    # decode steps too, through a session in debug mode
    cfg = GenerationConfig(max_new_tokens=4, eos_token_ids=[], debug_steps=[2])
    r1 = GenerationSession(engine, device=DEV, executor=plain).generate(BATCH[:2], cfg)
    r2 = GenerationSession(dbg, device=DEV, executor=marked, debug_mode=True).generate(BATCH[:2], cfg)
    assert r1.token_ids == r2.token_ids
    step = [s for s in r2.debug if s.phase == "generation"][0]
    assert step.step == 2 and step.tensors[0]["layers.1.mlp"].shape == (1, 64)
    greedy = marked.generate_greedy(GenerationSession(dbg, device=DEV).cache, BATCH[:2], 4, collect=True)
    assert greedy.tokens.tolist() == r1.token_ids
    assert len(greedy.step_outputs) == 3 and greedy.step_outputs[1]["layers.1.mlp"].shape == (2, 64)
    assert torch.equal(greedy.step_outputs[1]["layers.1.mlp"][0], step.tensors[0]["layers.1.mlp"][0])


def test_pdl_option(batch_engines):
    from workbench.errors import WorkbenchError
    from workbench.runtime.cuda_executor import CudaExecutor

    engine = batch_engines("llama_gqa")
    with pytest.raises(WorkbenchError, match="pdl must be"):
        CudaExecutor(engine, DEV, pdl="sometimes")
    ex = CudaExecutor(engine, DEV, pdl=False)
    ex.generate_greedy(GenerationSession(engine, device=DEV).cache, BATCH[:1], 2)
    if DEV == "cpu":  # no graphs without CUDA: nothing was chosen
        assert ex.graph_report() == {1: {"pdl": None, "replay_ms": {}}}


def test_marked_rotated_q_and_k_are_computed_on_the_side(batch_engines):
    # the decode step rotates q and k inside the paged attention kernel; marking them adds a rope kernel that
    # writes them (not the cache) and changes nothing else
    engine = batch_engines("llama_gqa", "bfloat16" if DEV == "cuda" else "float16")
    ropes = [n.name for n in engine.network.nodes.values() if n.op == "rope" and n.name.startswith("layers.1.")]
    dbg = debug_engine(engine, ropes)
    plain, marked = _cuda(engine), _cuda(dbg)
    assert marked.program.source.count("_rope_qkv(") == 1 and marked.program.source.count("_rope_attention(") == 2
    cfg = GenerationConfig(max_new_tokens=4, eos_token_ids=[], debug_steps=[2])
    r1 = GenerationSession(engine, device=DEV, executor=plain).generate(BATCH[:2], cfg)
    r2 = GenerationSession(dbg, device=DEV, executor=marked, debug_mode=True).generate(BATCH[:2], cfg)
    ref = GenerationSession(dbg, device=DEV, debug_mode=True).generate(BATCH[:2], cfg)
    assert r1.token_ids == r2.token_ids == ref.token_ids
    got = [s for s in r2.debug if s.phase == "generation"][0].tensors[0]
    want = [s for s in ref.debug if s.phase == "generation"][0].tensors[0]
    for name in ropes:  # the layers before differ in roundings (fused kernels), so closeness, not bits
        err = (got[name].double() - want[name].double()).norm() / want[name].double().norm()
        assert got[name].shape == want[name].shape and err < 2e-2, name


def test_one_row_steps_take_the_norm_in_the_gemv(batch_engines, monkeypatch):
    # at one row the add + norm run in the prologue of the projection's GEMV: the same tokens as the reference,
    # and a debug engine (its norms computed on the side) the same logits and tokens as the plain one
    import workbench.plugins.gemv as gm
    from workbench.runtime import cuda_program

    monkeypatch.setattr(cuda_program, "NORM_FUSION", "prologue")
    engine = batch_engines("llama_gqa", "bfloat16" if DEV == "cuda" else "float16")
    dbg = debug_engine(engine, ["all"])
    plain, marked = _cuda(engine, "triton-swiglu"), _cuda(dbg, "triton-swiglu")
    fused = []
    launch = gm._launch
    monkeypatch.setattr(gm, "_launch", lambda *a, **k: (fused.append(len(a) > 11 and a[11] is not None)
                                                        or launch(*a, **k)))
    cfg = GenerationConfig(max_new_tokens=4, eos_token_ids=[], debug_steps=[2])
    r1 = GenerationSession(engine, device=DEV, executor=plain).generate(BATCH[2:3], cfg)
    # four one-row passes (the one-token prompt, three steps), each with four GEMVs taking a norm: gate_up of both
    # layers, qkv of layer 1, the logits (on a GPU, capturing the decode graphs runs the step more times)
    assert fused.count(True) == 16 if DEV == "cpu" else fused.count(True) >= 16 and fused.count(True) % 4 == 0
    r2 = GenerationSession(dbg, device=DEV, executor=marked, debug_mode=True).generate(BATCH[2:3], cfg)
    ref = GenerationSession(dbg, device=DEV, debug_mode=True).generate(BATCH[2:3], cfg)
    assert r1.token_ids == r2.token_ids == ref.token_ids
    got = [s for s in r2.debug if s.phase == "generation"][0].tensors[0]
    want = [s for s in ref.debug if s.phase == "generation"][0].tensors[0]
    for name in ("layers.0.post_norm", "layers.1.input_norm", "layers.1", "final_norm", "logits"):
        err = (got[name].double() - want[name].double()).norm() / want[name].double().norm()
        assert err < 2e-2, name
