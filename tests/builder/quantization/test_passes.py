"""The quantization passes on the tiny Llama: graph shape and names, stored formats, accuracy, engine files."""

from __future__ import annotations

import json

import pytest
import torch

from tests.builder.quantization.conftest import SEQUENCES, run_logits
from workbench.builder.config import BuildConfig
from workbench.builder.quantization import QuantConfig
from workbench.errors import WorkbenchError

LINEARS = [f"layers.{i}.{p}" for i in range(2) for p in ("attn.qkv", "attn.o_proj", "mlp.gate_up", "mlp.down")]
METHOD_KERNEL = {"int8_wo": "w8a16", "int4_wo": "w4a16", "smoothquant": "w8a8", "gptq": "w4a16", "awq": "w4a16",
                 "fp8": "fp8"}


def _computed(net) -> list[str]:
    return [n for n, node in net.nodes.items() if node.op != "param"]


def _kl(ref: torch.Tensor, q: torch.Tensor) -> float:
    lr, lq = torch.log_softmax(ref, -1), torch.log_softmax(q, -1)
    return float((lr.exp() * (lr - lq)).sum(-1).mean())


def _agreement(ref: torch.Tensor, q: torch.Tensor) -> float:
    return float((ref.argmax(-1) == q.argmax(-1)).float().mean())


@pytest.mark.parametrize("method", list(METHOD_KERNEL))
def test_only_decoder_linears_are_quantized_and_names_stay(method, quantized, fp_engine):
    engine = quantized(method=method)
    net = engine.network
    assert _computed(net) == _computed(fp_engine.network)  # same canonical names, same order
    quant = [n.name for n in net.nodes.values() if n.op == "quant_linear"]
    assert quant == LINEARS
    assert net.nodes["logits"].op == "linear" and net.nodes["logits.weight"].dtype == "float32"
    assert net.weights["embed.weight"].dtype == torch.float32
    for name in LINEARS:
        node = net.nodes[name]
        assert node.attrs["method"] == METHOD_KERNEL[method] and node.attrs["algorithm"] == method
        assert f"{name}.weight" not in net.weights  # the float weight is gone
        n_out, n_in = fp_engine.network.weights[f"{name}.weight"].shape
        qw = net.weights[f"{name}.qweight"]
        if node.attrs["method"] == "w4a16":
            assert qw.dtype == torch.uint8 and list(qw.shape) == [n_out, n_in // 2]
            assert list(net.weights[f"{name}.scales"].shape) == [n_out, n_in // 128]
        elif method == "fp8":
            assert qw.dtype == torch.float8_e4m3fn and list(qw.shape) == [n_out, n_in]
        else:
            assert qw.dtype == torch.int8 and list(qw.shape) == [n_out, n_in]
    net.validate()


def test_int8_weight_only_keeps_the_logits(quantized, fp_logits):
    q = run_logits(quantized(method="int8_wo"), SEQUENCES)
    assert _agreement(fp_logits, q) >= 0.95
    assert _kl(fp_logits, q) < 0.02


def test_methods_rank_as_expected_end_to_end(quantized, fp_logits):
    kl = {m: _kl(fp_logits, run_logits(quantized(method=m), SEQUENCES)) for m in ("int8_wo", "int4_wo", "gptq", "smoothquant")}
    assert kl["int8_wo"] < kl["smoothquant"] < kl["gptq"] < kl["int4_wo"]  # 8-bit < 4-bit; GPTQ beats round-to-nearest


def test_awq_clipping_lowers_every_linears_error_on_its_calibration_rows(fp_engine, quantized, fp_logits):
    from workbench.builder.quantization import calibrate_network
    from workbench.builder.quantization.calibration import calibration_ids
    from workbench.runtime.quant_ops import w4a16

    net = fp_engine.network
    ids, _ = calibration_ids(QuantConfig(), None, 128)  # what the `quantized` builds calibrated on
    calib = calibrate_network(net, QuantConfig(method="awq"), ids)
    engines = {clip: quantized(method="awq", awq_clip=clip) for clip in (True, False)}
    for name in LINEARS:
        x = calib.inputs[name].samples
        ref = x @ net.weights[f"{name}.weight"].T
        err = {}
        for clip, engine in engines.items():
            ops = {role: engine.network.weights[f"{name}.{role}"] for role in ("qweight", "scales", "zeros", "smooth")}
            err[clip] = float((w4a16(x, ops, 128) - ref).norm())
        assert err[True] < 0.97 * err[False], (name, err)
    kl = {clip: _kl(fp_logits, run_logits(engine, SEQUENCES)) for clip, engine in engines.items()}
    assert kl[True] < kl[False], kl  # and end to end, on sequences it was not calibrated on


@pytest.mark.parametrize("kw", [dict(method="smoothquant", sq_acts="per_tensor", sq_weights="per_tensor"),
                                dict(method="gptq", act_order=True), dict(kv_cache_dtype="int8"),
                                dict(kv_cache_dtype="fp8", kv_scale="per_tensor")])
def test_variants_stay_close(kw, quantized, fp_logits):
    assert _kl(fp_logits, run_logits(quantized(**kw), SEQUENCES)) < 1.0


def test_exclude_patterns_are_honoured(quantized):
    net = quantized(method="int8_wo", exclude=["layers.1.mlp", "*.qkv"]).network
    quant = {n.name for n in net.nodes.values() if n.op == "quant_linear"}
    assert quant == {"layers.0.attn.o_proj", "layers.0.mlp.gate_up", "layers.0.mlp.down", "layers.1.attn.o_proj"}
    assert net.nodes["layers.1.mlp.down"].op == "linear"


def test_an_exclude_pattern_that_matches_nothing_is_an_error(quant_checkpoint):
    from workbench.builder.build import build

    with pytest.raises(WorkbenchError, match="layers.9.mlp.down"):
        build(quant_checkpoint[0], BuildConfig(quant=QuantConfig(method="int8_wo", exclude=["layers.9.mlp.down"])))


def test_a_group_size_that_does_not_divide_the_layer_leaves_a_short_last_group(quantized, fp_logits):
    engine = quantized(method="int4_wo", group_size=96)  # 256 = 96 + 96 + 64, 512 = 5 * 96 + 32
    w = engine.network.weights
    assert list(w["layers.0.attn.qkv.scales"].shape) == [512, 3] and list(w["layers.0.mlp.down.scales"].shape) == [256, 6]
    assert _kl(fp_logits, run_logits(engine, SEQUENCES)) < _kl(fp_logits, run_logits(quantized(method="int4_wo"), SEQUENCES))


def test_build_config_round_trip():
    config = BuildConfig(dtype="bf16", quant=QuantConfig(method="gptq", kv_cache_dtype="fp8", act_order=True, exclude=["1.mlp"]))
    d = json.loads(json.dumps(config.to_dict()))
    assert BuildConfig.from_dict(d) == config
    assert BuildConfig.from_dict({k: v for k, v in BuildConfig().to_dict().items() if k != "quant"}).quant is None
    with pytest.raises(WorkbenchError, match="unknown quantization"):
        QuantConfig(method="int3")


def test_quantized_engine_saves_and_loads(quantized, tmp_path):
    from workbench.builder.engine import load_engine, save_engine

    engine = quantized(method="fp8", kv_cache_dtype="int8")
    save_engine(engine, tmp_path / "e")
    loaded = load_engine(tmp_path / "e")
    assert loaded.build_config == engine.build_config
    assert loaded.network.weights["layers.0.attn.qkv.qweight"].dtype == torch.float8_e4m3fn
    assert torch.equal(run_logits(loaded, SEQUENCES), run_logits(engine, SEQUENCES))


def test_quantized_kv_cache_generation_matches_a_plain_forward(quantized):
    from workbench.runtime.attention_meta import AttentionMeta
    from workbench.runtime.executor import Executor
    from workbench.runtime.session import GenerationSession

    engine = quantized(kv_cache_dtype="int8")
    session = GenerationSession(engine)
    assert session.cache.layers[0].dtype == torch.int8
    seq = SEQUENCES[1]
    full = Executor(engine).forward([seq])[0]["logits"]
    ex = session.executor
    session.cache.reserve(0, len(seq))
    ctx = ex.run(torch.tensor(seq[:-1]), torch.arange(len(seq) - 1), AttentionMeta([0], [len(seq) - 1], [0], session.cache))
    step = ex.run(torch.tensor(seq[-1:]), torch.tensor([len(seq) - 1]), AttentionMeta([0], [1], [len(seq) - 1], session.cache))
    session.cache.release(0)
    torch.testing.assert_close(ctx["logits"], full[:-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step["logits"], full[-1:], rtol=1e-4, atol=1e-4)


def test_every_method_runs_in_a_bf16_engine(quant_checkpoint, fp_logits):
    from workbench.builder.build import build

    config = QuantConfig(method="int8_wo", kv_cache_dtype="int8", calib_samples=2, calib_seq_len=32)
    for method in METHOD_KERNEL:
        config.method = method
        engine = build(quant_checkpoint[0], BuildConfig(dtype="bf16", quant=config))
        logits = run_logits(engine, SEQUENCES[:1])
        assert logits.dtype == torch.bfloat16
        assert _kl(fp_logits[:len(SEQUENCES[0])], logits.float()) < 2.0, method
