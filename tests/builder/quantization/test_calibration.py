"""Calibration: the token ids it runs on, and the statistics it gathers through the executor."""

from __future__ import annotations

import pytest
import torch

from tests.builder.quantization.conftest import SEQUENCES
from workbench.builder.quantization import QuantConfig, calibrate_network
from workbench.builder.quantization.calibration import calibration_ids
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from tests.inspect.conftest import save_tokenizer  # a byte-level tokenizer: one token per byte

    path = tmp_path_factory.mktemp("tok")
    save_tokenizer(path)
    return path


def test_prompts_file_and_builtin_text(tok_dir, tmp_path):
    ids, source = calibration_ids(QuantConfig(calib_prompts=["abc", "hello world"]), tok_dir, 300)
    assert [len(s) for s in ids] == [3, 11] and "2 prompts" in source
    text = tmp_path / "calib.txt"
    text.write_text("x" * 100)
    ids, source = calibration_ids(QuantConfig(calib_file=str(text), calib_samples=3, calib_seq_len=40), tok_dir, 300)
    assert [len(s) for s in ids] == [40, 40, 20] and str(text) in source
    ids, source = calibration_ids(QuantConfig(calib_samples=4, calib_seq_len=64), tok_dir, 300)
    assert [len(s) for s in ids] == [64] * 4 and "built-in" in source


def test_without_a_tokenizer_ids_are_seeded_random(tmp_path):
    a, source = calibration_ids(QuantConfig(calib_samples=2, calib_seq_len=8), tmp_path, 50)
    b, _ = calibration_ids(QuantConfig(calib_samples=2, calib_seq_len=8), None, 50)
    assert a == b and len(a) == 2 and all(0 <= t < 50 for s in a for t in s) and "random" in source


def test_a_missing_calibration_file_is_a_clear_error(tok_dir, tmp_path):
    with pytest.raises(WorkbenchError, match="cannot read the calibration file"):
        calibration_ids(QuantConfig(calib_file=str(tmp_path / "nope.txt")), tok_dir, 300)


def test_statistics_match_the_marked_tensors(fp_engine):
    from workbench.builder.build import debug_engine
    from workbench.runtime.executor import Executor

    net = fp_engine.network
    calib = calibrate_network(net, QuantConfig(method="gptq", kv_cache_dtype="int8"), SEQUENCES, all_stats=True)
    assert calib.tokens == sum(map(len, SEQUENCES))
    marked = Executor(debug_engine(fp_engine, ["layers.1.mlp.act", "layers.0.attn.k_rope"])).forward(SEQUENCES)
    act = torch.cat([o["layers.1.mlp.act"] for o in marked])  # the input of layers.1.mlp.down
    st = calib.inputs["layers.1.mlp.down"]
    assert st.input == "layers.1.mlp.act"
    torch.testing.assert_close(st.amax, act.abs().amax(0))
    torch.testing.assert_close(st.absmean, act.abs().mean(0))
    torch.testing.assert_close(st.hessian, act.T @ act / len(act), rtol=1e-4, atol=1e-5)
    assert st.samples.shape == (min(256, len(act)), act.shape[1])
    k = torch.cat([o["layers.0.attn.k_rope"] for o in marked])
    torch.testing.assert_close(calib.kv["layers.0.attn.sdpa"].k_amax, k.abs().amax(dim=(0, 2)))
