"""The quantization report: a deliberately broken layer is found by every ranking and the bisection;
outlier channels; suggestions; the `wb quant-report`, `wb bisect` and `wb build --quant` commands."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from tests.builder.quantization.conftest import make_quant_checkpoint, one_torch_thread  # noqa: F401 (autouse)
from workbench.builder.quantization.calibration import Calibration, InputStats
from workbench.cli import main
from workbench.inspect import quant_report as qr

BROKEN = "layers.1.mlp.down"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("qr") / "llama256"
    make_quant_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def broken_engine(ckpt, tmp_path_factory):
    """An int8 weight-only engine whose layers.1.mlp.down scales were corrupted after the build."""
    from workbench.builder.build import build_engine
    from workbench.builder.config import BuildConfig
    from workbench.builder.engine import Engine, save_engine
    from workbench.builder.quantization import QuantConfig

    good = build_engine(ckpt, tmp_path_factory.mktemp("qr") / "int8", BuildConfig(quant=QuantConfig(method="int8_wo")))
    net = good.network.copy()
    g = torch.Generator().manual_seed(0)
    scales = net.weights[f"{BROKEN}.scales"]
    net.weights[f"{BROKEN}.scales"] = scales * (1.0 + 0.5 * torch.randn(scales.shape, generator=g))
    bad = Engine(network=net, architecture=good.architecture, model_config=good.model_config,
                 build_config=good.build_config, source=dict(good.source))
    save_engine(bad, tmp_path_factory.mktemp("qr") / "broken")
    return bad


@pytest.fixture(scope="module")
def pair_and_seqs(broken_engine):
    pair = qr.prepare(broken_engine.path)
    return pair, qr.eval_sequences(pair, samples=2, seq_len=64)


@pytest.mark.parametrize("mode", qr.MODES)
def test_ranking_names_the_broken_layer(pair_and_seqs, mode):
    pair, seqs = pair_and_seqs
    layers = qr.rank_layers(pair, seqs, mode)
    assert [r.name for r in layers][0] == BROKEN
    assert layers[0].share > 0.5
    assert sorted(r.name for r in layers) == sorted(pair.layers) and len(layers) == 8


def test_bisection_names_the_broken_layer(pair_and_seqs):
    pair, seqs = pair_and_seqs
    b = qr.bisect_layers(pair, seqs)
    assert b.culprit == BROKEN
    assert len(b.steps) <= 3  # log2(8) runs


def test_report_suggests_keeping_the_broken_layer(pair_and_seqs):
    pair, seqs = pair_and_seqs
    report = qr.quant_report(pair, seqs, bisect=True)
    assert report.suggested_exclude[0] == BROKEN
    assert report.with_suggestion.kl < 0.3 * report.full.kl
    assert report.bisection.culprit == BROKEN
    assert {o.name for o in report.outliers} == set(pair.layers)
    json.dumps(report.to_dict())


def test_outlier_channels():
    amax = torch.ones(64)
    amax[[5, 9]] = torch.tensor([40.0, 12.0])
    calib = Calibration(inputs={"a": InputStats("a", "a_in", amax, amax / 2), "b": InputStats("b", "b_in", torch.ones(64), torch.ones(64))})
    out = qr.find_outliers(calib, threshold=8.0)
    assert [o.name for o in out] == ["a", "b"]
    assert out[0].channels == [5, 9] and out[0].ratio == pytest.approx(40.0) and out[1].channels == []


def test_an_unquantized_engine_needs_a_mode(ckpt, tmp_path):
    from workbench.builder.build import build_engine
    from workbench.errors import WorkbenchError

    engine = build_engine(ckpt, tmp_path / "fp")
    with pytest.raises(WorkbenchError, match="not quantized"):
        qr.prepare(engine.path)


@pytest.fixture
def wb(monkeypatch, tmp_path):
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(map(str, args)), catch_exceptions=False)

    return invoke


def test_wb_bisect(wb, broken_engine, tmp_path):
    r = wb("bisect", broken_engine.path, "--eval-seq-len", 48, "--binary")
    assert r.exit_code == 0, r.output
    assert f"most harmful layer: {BROKEN}" in r.output
    r = wb("bisect", broken_engine.path, "--eval-seq-len", 48, "--mode", "isolate", "--json", "-")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["layers"][0]["name"] == BROKEN and data["mode"] == "isolate"


def test_wb_quant_report_from_a_checkpoint(wb, ckpt, tmp_path):
    out = tmp_path / "report.json"
    r = wb("quant-report", ckpt, "--quant", "int4_wo", "--eval-seq-len", 48, "--json", out)
    assert r.exit_code == 0, r.output
    assert "activation outlier channels" in r.output
    data = json.loads(out.read_text())
    assert data["quantization"] == "int4_wo (w4a16)" and len(data["layers"]) == 8


def test_wb_build_quant(wb, ckpt, tmp_path):
    from workbench.builder.engine import load_engine

    r = wb("build", ckpt, "-o", tmp_path / "e", "--quant", "smoothquant", "--sq-alpha", 0.6, "--sq-acts", "per_tensor",
           "--kv-cache-dtype", "fp8", "--quant-exclude", "layers.0.mlp.down", "--calib-samples", 4)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "quantized 7 linear layers smoothquant (w8a8); 2 kept in float32; KV cache fp8 (per_head)" in text
    engine = load_engine(tmp_path / "e")
    q = engine.build_config.quant
    assert (q.method, q.sq_alpha, q.sq_acts, q.kv_cache_dtype, q.exclude) == ("smoothquant", 0.6, "per_tensor", "fp8",
                                                                               ["layers.0.mlp.down"])
    assert engine.network.nodes["layers.0.mlp.down"].op == "linear"
    assert engine.network.nodes["layers.1.mlp.down"].attrs["act"] == "per_tensor"
    r = wb("build", ckpt, "-o", tmp_path / "bad", "--quant", "int4_wo", "--quant-exclude", "layers.7.mlp")
    assert r.exit_code == 2 and "layers.7.mlp" in r.output and "excludes no linear layer" in r.output


def test_wb_diff_works_unchanged_on_a_quantized_engine(broken_engine):
    from workbench.inspect.diff import diff

    (report,) = diff(broken_engine, "all", token_ids=list(range(3, 40)), modes=("local",))
    assert report.names[:3] == ["embed", "layers.0.input_norm", "layers.0.attn.qkv"]  # canonical names
    failing = {r.name for r in report.failures}
    assert "layers.1.mlp" in failing  # where the broken layers.1.mlp.down lands
    assert not failing & {"embed", "layers.0.input_norm", "layers.1.post_norm", "final_norm", "logits"}
