"""The `layer_block` fusion (runtime/layer_block.py, runtime/cuda_program.py): o_proj through the next projection as
one call. On the CPU its helper runs the plugins' launches (Triton's interpreter): the program's shape, the same
tokens as without it, marks that change nothing. On a Hopper GPU the call runs plugins/decode_block.py's kernel at one
row, bf16 and int8 weights, against the same engine without the fusion."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # before Triton's first import: it reads the switch then
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from workbench.builder.build import debug_engine  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.runtime import layer_block  # noqa: E402
from workbench.runtime.executor import Executor  # noqa: E402
from workbench.runtime.session import GenerationConfig, GenerationSession  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
PROMPTS = [[1, 17, 42, 99, 3, 64, 7], [5]]


def _cuda(engine, mode: str, monkeypatch):
    from workbench.runtime.cuda_executor import CudaExecutor, GemvPolicy

    monkeypatch.setattr(layer_block, "MODE", mode)
    return CudaExecutor(engine, DEV, gemv=GemvPolicy.parse("triton-swiglu"))


def test_program_has_one_call_a_layer(batch_engines, monkeypatch):
    engine = batch_engines("llama_gqa")
    src = _cuda(engine, "on", monkeypatch).program.source
    assert src.count("_layer_block(") == 2  # layer 0 through layer 1's qkv; layer 1 through the logits
    assert "_add_rms_norm(" not in src and "_swiglu_linear(" not in src and "_norm_linear(" not in src
    assert src.count("_rms_norm(") == 1  # layer 0's input norm: before any block
    assert src.count("'rope.inv_freq@1.0', True)") == 2  # attention before a block merges its own partitions
    # auto: only the shapes measured faster, on a Hopper GPU; off: never
    assert "_layer_block(" not in _cuda(engine, "auto", monkeypatch).program.source
    assert "True)" not in _cuda(engine, "off", monkeypatch).program.source
    assert "_layer_block(" not in _cuda(engine, "off", monkeypatch).program.source
    with pytest.raises(WorkbenchError, match="WB_LAYER_BLOCK"):
        _cuda(engine, "always", monkeypatch)


def test_the_tables_rings_fit_the_kernel():
    from workbench.plugins.decode_block import pairs_fit, ring_slots

    for (h, i, _, fmt), (kib, paired) in layer_block.H100_BLOCK.items():
        wq = 8 if fmt == "w8a16" else 0
        assert ring_slots(kib, wq) >= 4 and ring_slots(kib, wq) % 2 == 0
        assert pairs_fit(h, i, wq) or not paired
    assert not pairs_fit(2048, 768, 0)  # 3 chunks of x in the down projection's K
    with pytest.raises(ValueError, match="a ring of 200 KiB"):
        ring_slots(200, 0)
    with pytest.raises(ValueError, match="a ring of 16 KiB"):
        ring_slots(16, 8)


def test_same_tokens_as_without_it_and_marks_change_nothing(batch_engines, monkeypatch):
    engine = batch_engines("llama_gqa", "bfloat16" if DEV == "cuda" else "float16")
    cfg = GenerationConfig(max_new_tokens=4, eos_token_ids=[])
    without = GenerationSession(engine, device=DEV, executor=_cuda(engine, "off", monkeypatch)).generate(PROMPTS, cfg)
    plain = _cuda(engine, "on", monkeypatch)
    dbg = debug_engine(engine, ["all"])
    marked = _cuda(dbg, "on", monkeypatch)
    # the norms, gate_up and the activation are computed on the side for the marks; the calls stay
    assert marked.program.source.count("_layer_block(") == 2 and "_silu(" in marked.program.source
    assert GenerationSession(engine, device=DEV, executor=plain).generate(PROMPTS, cfg).token_ids == without.token_ids
    a, b = plain.forward(PROMPTS), marked.forward(PROMPTS)
    ref = Executor(dbg, DEV).forward(PROMPTS)
    for x, y, r in zip(a, b, ref):
        assert torch.equal(x["logits"], y["logits"])
        for name in ("layers.0.post_norm", "layers.0.mlp.gate_up", "layers.0.mlp.gate_act", "layers.0.mlp",
                     "layers.1.input_norm", "layers.1.attn.qkv", "layers.1"):
            err = (y[name].double() - r[name].double()).norm() / r[name].double().norm()
            assert y[name].shape == r[name].shape and err < 2e-2, name


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="the block kernel needs a Hopper GPU")
@pytest.mark.parametrize("quant", [None, "int8_wo"])
def test_the_kernel_in_an_engine(tmp_path, monkeypatch, quant):
    from tests.conftest import make_checkpoint
    from workbench.builder.build import build
    from workbench.builder.config import BuildConfig
    from workbench.builder.quantization import QuantConfig
    from workbench.builder.quantization.config import DEFAULT_TARGETS

    # shapes the kernel takes: hidden and intermediate whole 512-value chunks, projections whole 16-row tiles
    make_checkpoint(tmp_path / "ckpt", "llama_gqa", hidden_size=512, intermediate_size=1024, num_attention_heads=8,
                    num_key_value_heads=2, vocab_size=1024)
    q = QuantConfig(method=quant, targets=DEFAULT_TARGETS + ["logits"]) if quant else None
    engine = build(tmp_path / "ckpt", BuildConfig(dtype="bfloat16", max_seq_len=64, max_batch_size=2,
                                                   kv_page_size=8, quant=q))
    import workbench.plugins.decode_block as db

    calls = []
    real = db.decode_block
    monkeypatch.setattr(db, "decode_block", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = GenerationConfig(max_new_tokens=6, eos_token_ids=[])
    without = GenerationSession(engine, device=DEV, executor=_cuda(engine, "off", monkeypatch)).generate(PROMPTS[:1],
                                                                                                           cfg)
    ex = _cuda(engine, "on", monkeypatch)
    got = GenerationSession(engine, device=DEV, executor=ex).generate(PROMPTS[:1], cfg)
    assert calls, "the block kernel never ran"
    assert got.token_ids == without.token_ids
    # one row (a one-token prompt) by the kernel against the launches: the same values within the sums' order
    before = len(calls)
    a = ex.forward([[3]])[0]["logits"].double()
    assert len(calls) == before + 2  # both layers' blocks (the last one through the logits)
    b = _cuda(engine, "off", monkeypatch).forward([[3]])[0]["logits"].double()
    assert (a - b).norm() / b.norm() < 1e-2
