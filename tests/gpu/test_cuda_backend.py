"""The `cuda` backend on a GPU: every plugin at full sizes against its reference, and the fast path
(compiled program + CUDA-graph decode) against the reference backend, with and without marks."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():  # before importing Triton (see workbench/plugins/common.py)
    pytest.skip("needs a CUDA device", allow_module_level=True)

from workbench.builder.build import debug_engine  # noqa: E402
from workbench.runtime.executor import Executor  # noqa: E402
from workbench.runtime.session import GenerationConfig, GenerationSession  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = "cuda"


def rel_err(a: torch.Tensor, e: torch.Tensor) -> float:
    """||a - e|| / ||e|| in float64, failing on NaN or inf."""
    assert torch.isfinite(a).all()
    return ((a.double() - e.double()).norm() / e.double().norm()).item()


TOL = {torch.float16: 3e-3, torch.bfloat16: 1.5e-2}


@pytest.mark.parametrize("d", [64, 80, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hq,hkv,window", [(32, 8, None), (8, 1, None), (16, 8, 256)])
def test_flash_attention_full_size(d, dtype, hq, hkv, window):
    from workbench.plugins.flash_attention import flash_attention, flash_attention_ref

    torch.manual_seed(d + hq)
    lengths = [1111, 1, 300, 637]
    t = sum(lengths)
    qkv = torch.randn(t, (hq + 2 * hkv) * d, device=DEV, dtype=dtype)
    q, k, v = qkv[:, :hq * d].view(t, hq, d), qkv[:, hq * d:(hq + hkv) * d].view(t, hkv, d), qkv[:, (hq + hkv) * d:].view(t, hkv, d)
    cu = torch.tensor([0] + lengths, device=DEV).cumsum(0).to(torch.int32)
    out = torch.full_like(q, float("nan"))  # every element must be written
    flash_attention(q, k, v, cu, max(lengths), d ** -0.5, window, out=out)
    assert rel_err(out, flash_attention_ref(q, k, v, cu, max(lengths), d ** -0.5, window)) < TOL[dtype]


@pytest.mark.parametrize("d,dtype,hq,hkv,window", [(64, torch.bfloat16, 32, 8, None), (128, torch.bfloat16, 32, 8, None),
                                                   (80, torch.float16, 8, 1, None), (128, torch.bfloat16, 32, 8, 100)])
def test_paged_decode_full_size(d, dtype, hq, hkv, window):
    from workbench.plugins.paged_attention import paged_decode_attention, paged_decode_attention_ref

    torch.manual_seed(d)
    page, lengths = 16, [2000, 1, 383, 0, 17, 1024, 64, 65]
    pages = [-(-n // page) for n in lengths]
    kv = torch.randn(sum(pages) + 5, 2, page, hkv, d, device=DEV, dtype=dtype)
    perm = torch.randperm(kv.shape[0]).tolist()
    tables = torch.zeros(len(lengths), 2048 // page, dtype=torch.int32)
    at = 0
    for b, p in enumerate(pages):
        tables[b, :p] = torch.tensor(perm[at:at + p])
        at += p
    tables = tables.to(DEV)
    q = torch.randn(len(lengths), hq, d, device=DEV, dtype=dtype)
    lens = torch.tensor(lengths, dtype=torch.int32, device=DEV)
    out = paged_decode_attention(q, kv, tables, lens, d ** -0.5, window)
    ref = paged_decode_attention_ref(q, kv, tables, lens, d ** -0.5, window)
    assert rel_err(out, ref) < TOL[dtype] and (out[3] == 0).all()


def test_norm_rope_silu_match_reference_roundings():
    from workbench.plugins.activation import silu_and_mul, silu_and_mul_ref
    from workbench.plugins.rms_norm import add_rms_norm, add_rms_norm_ref
    from workbench.plugins.rotary import rope_qkv, rope_qkv_ref, rope_table

    torch.manual_seed(0)
    x, r = (torch.randn(2048, 4096, device=DEV, dtype=torch.bfloat16) for _ in range(2))
    w = 1 + 0.1 * torch.randn(4096, device=DEV, dtype=torch.bfloat16)
    s, y = add_rms_norm(x, r, w, 1e-5)
    s_ref, y_ref = add_rms_norm_ref(x, r, w, 1e-5)
    assert torch.equal(s, s_ref)
    assert (y != y_ref).float().mean() < 0.01 and rel_err(y, y_ref) < 4e-3  # reduction order only
    inv_freq = 1.0 / (500000 ** (torch.arange(0, 128, 2, device=DEV).float() / 128))
    cos, sin = rope_table(inv_freq, 4096, 1.0, torch.bfloat16)
    qkv = torch.randn(3000, 48 * 128, device=DEV, dtype=torch.bfloat16)
    pos = torch.randint(0, 4096, (3000,), device=DEV)
    kv_a = torch.zeros(200, 2, 16, 8, 128, device=DEV, dtype=torch.bfloat16)
    kv_b = kv_a.clone()
    slots = torch.randperm(3200, device=DEV)[:3000]
    q, k = rope_qkv(qkv, 32, 8, 128, cos, sin, pos, kv_a, slots)
    q_ref, k_ref = rope_qkv_ref(qkv, 32, 8, 128, cos, sin, pos, kv_b, slots)
    # the same roundings as torch, bit for bit (bf16 rounded on the bits: see plugins.common.rounded)
    for a, b in ((q, q_ref), (k, k_ref), (kv_a, kv_b)):
        diff = a.float() != b.float()
        print(f"rope: {diff.float().mean().item():.2e} of elements differ, max {(a.float() - b.float()).abs().max().item()}")
        assert torch.equal(a, b)
    gu = 3 * torch.randn(512, 2 * 8192, device=DEV, dtype=torch.bfloat16)
    a, b = silu_and_mul(gu), silu_and_mul_ref(gu)
    assert (a != b).float().mean() < 0.01 and rel_err(a, b) < 4e-3  # exp's last bit, at most one rounding


@pytest.mark.parametrize("m", [1, 3, 8])
@pytest.mark.parametrize("n,k", [(3072, 2048), (2048, 8192), (128256, 2048)])
def test_gemv_full_size(m, n, k):
    from workbench.plugins.gemv import gemv

    x = torch.randn(m, k, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=DEV, dtype=torch.bfloat16) / k ** 0.5
    for cfg in [(32, 256, 1, 4, 4), (16, 512, 4, 4, 3)]:
        assert rel_err(gemv(x, w, None, cfg), x.float() @ w.float().T) < 5e-3
    from workbench.plugins.activation import silu_and_mul

    if n % 2 == 0:  # w as a gate_up projection: the fused activation is the unfused one, bit for bit
        for cfg in [(32, 256, 1, 4, 4), (16, 512, 4, 4, 3), (8, 512, 1, 4, 4, False)]:
            assert torch.equal(gemv(x, w, None, cfg, swiglu=True), silu_and_mul(gemv(x, w, None, cfg)))


# -- the fast path end to end on the tiny families --------------------------------------------------

BATCH = [[1, 17, 42, 99, 3, 64, 7], [5, 9, 101], [127], [0, 44, 90, 23, 61, 18, 70, 4, 11, 12]]


@pytest.mark.parametrize("family,gemv", [("llama_gqa", "table"), ("llama_mqa", "triton"), ("mistral_window", "triton-swiglu"),
                                         ("qwen2_bias", "triton-swiglu"), ("llama3_rope", "cublas")])
def test_graph_decode_matches_reference_session(batch_engines, family, gemv):
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy

    engine = batch_engines(family)
    cfg = GenerationConfig(max_new_tokens=24, eos_token_ids=[])
    expected = GenerationSession(engine, device=DEV).generate(BATCH, cfg).token_ids
    ex = CudaExecutor(engine, DEV, gemv=GemvPolicy.parse(gemv))
    session = GenerationSession(engine, device=DEV, executor=ex)
    assert session.generate(BATCH, cfg).token_ids == expected
    assert session.generate(BATCH[:3], cfg).token_ids == expected[:3]  # bucket 4 with a padding row
    assert ex.generate_greedy(session.cache, BATCH, 24).tokens.tolist() == expected
    assert ex.generate_greedy(session.cache, BATCH[1:2], 24).tokens.tolist() == expected[1:2]
    assert ex._graphs and all(g.graph is not None for g in ex._graphs.values())


def test_marks_change_nothing_on_the_gpu(batch_engines):
    from workbench.names import canonical_names
    from workbench.runtime.cuda_executor import CudaExecutor

    from workbench.runtime.cuda_executor import GemvPolicy

    engine = batch_engines("llama_gqa", "bfloat16")
    for patterns in (["all"], canonical_names(2)[:-1]):
        dbg = debug_engine(engine, patterns)
        policy = GemvPolicy.parse("triton-swiglu")
        plain, marked = CudaExecutor(engine, DEV, gemv=policy), CudaExecutor(dbg, DEV, gemv=policy)
        for x, y in zip(plain.forward(BATCH), marked.forward(BATCH)):
            assert torch.equal(x["logits"], y["logits"])
        cache = GenerationSession(engine, device=DEV).cache
        a = plain.generate_greedy(cache, BATCH, 16)
        b = marked.generate_greedy(cache, BATCH, 16, collect=True)
        assert torch.equal(a.tokens, b.tokens)
        ref = Executor(dbg, DEV).forward(BATCH)
        for y, r in zip(marked.forward(BATCH), ref):
            for name in dbg.marked:
                assert rel_err(y[name], r[name]) < 3e-2, name


def test_programmatic_dependent_launch_changes_nothing(batch_engines):
    from workbench.plugins import common
    from workbench.runtime.cuda_executor import CudaExecutor

    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs Hopper or later")
    assert common.use_pdl(), "the PDL probe failed on a Hopper GPU"
    engine = batch_engines("llama_gqa", "bfloat16")
    cache = GenerationSession(engine, device=DEV).cache
    tokens = {}
    for pdl in (True, False, "auto"):
        ex = CudaExecutor(engine, DEV, pdl=pdl)
        tokens[pdl] = ex.generate_greedy(cache, BATCH, 16).tokens
        report = ex.graph_report()[4]
        assert report["pdl"] == (pdl if pdl != "auto" else report["pdl"])
        if pdl == "auto":  # captured both ways, the faster replay kept
            ms = report["replay_ms"]
            assert set(ms) == {"True", "False"} and ms[str(report["pdl"])] == min(ms.values())
    assert torch.equal(tokens[True], tokens[False]) and torch.equal(tokens["auto"], tokens[False])
