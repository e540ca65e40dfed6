"""Sequential GPTQ: each linear's Hessian comes from the network whose earlier linears are already
quantized, and `gptq_sequential=False` keeps the one-pass calibration of the full-precision network."""

from __future__ import annotations

import pytest
import torch

from tests.builder.quantization.conftest import SEQUENCES
from workbench.builder.quantization import Calibration, QuantConfig, apply_quantization, calibrate_network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import InputStats, calibration_ids
from workbench.builder.quantization.gptq import gptq
from workbench.builder.quantization.int4_wo import rtn, w4a16
from workbench.builder.quantization.rewrite import replace_linears, select_targets, weight_of
from workbench.errors import WorkbenchError
from workbench.runtime.calibration import quantize_sequentially
from workbench.runtime.quant_ops import dequantize_w4

ONE_PASS = QuantConfig(method="gptq", gptq_sequential=False)


@pytest.mark.parametrize("model", ["llama256", "qwen2_bias"])  # qwen2: the quantized qkv keeps its bias
def test_each_hessian_comes_from_the_network_quantized_so_far(model, fp_engine, hf_checkpoint):
    from workbench.builder.build import build

    net = fp_engine.network if model == "llama256" else build(hf_checkpoint(model)[0]).network
    targets = select_targets(net, ONE_PASS.targets, [])
    seen = {}

    def one(name, hessian):
        seen[name] = hessian
        return w4a16(*rtn(weight_of(net, name), 128), 128, "int4_wo")  # any quantizer will do here

    # small batches: the three sequences run as three batches kept in step, node by node
    quantized = quantize_sequentially(net, SEQUENCES, targets, one, batch_tokens=40)
    assert list(quantized) == targets
    one_pass = calibrate_network(net, ONE_PASS, SEQUENCES, targets)
    first = targets[0]  # nothing is quantized before it
    torch.testing.assert_close(seen[first], one_pass.inputs[first].hessian, rtol=1e-5, atol=1e-6)
    for i in (1, 4, 7):  # o_proj after layer 0's quantized qkv; layer 1's qkv; the last down
        name = targets[i]
        partial = replace_linears(net, {n: quantized[n] for n in targets[:i]})
        ref = calibrate_network(partial, ONE_PASS, SEQUENCES, [name]).inputs[name].hessian
        torch.testing.assert_close(seen[name], ref, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(seen[name], one_pass.inputs[name].hessian, rtol=1e-3, atol=1e-4), name


def _layer_error(net, quantized_net, name: str, hessian: torch.Tensor) -> float:
    """Mean squared output error of one quantized linear on inputs with this Hessian: tr(D H D^T), D = W - Wq."""
    ops = {k: quantized_net.weights[f"{name}.{k}"] for k in ("qweight", "scales", "zeros")}
    d = weight_of(net, name) - dequantize_w4(ops, 128)
    return float(torch.trace(d @ hessian @ d.T))


@pytest.mark.parametrize("act_order", [False, True])
def test_sequential_gptq_fits_each_linear_to_the_inputs_it_sees(act_order, fp_engine, quantized):
    net = fp_engine.network
    targets = select_targets(net, ONE_PASS.targets, [])
    ids, _ = calibration_ids(QuantConfig(), None, 128)  # what the `quantized` builds calibrated on
    errors = {}
    for seq in (True, False):
        qnet = quantized(method="gptq", act_order=act_order, gptq_sequential=seq).network
        seen = calibrate_network(qnet, ONE_PASS, ids, targets)  # each linear's inputs inside its quantized network
        errors[seq] = [_layer_error(net, qnet, n, seen.inputs[n].hessian) for n in targets]
    # nothing is quantized before the first linear (only the Hessian's summation order differs)
    assert errors[True][0] == pytest.approx(errors[False][0], rel=1e-2)
    for name, e_seq, e_one in zip(targets[1:], errors[True][1:], errors[False][1:]):
        assert e_seq < e_one, (name, e_seq, e_one)


def test_one_pass_gptq_is_the_old_calibration(fp_engine, quantized):
    net = fp_engine.network
    ids, _ = calibration_ids(QuantConfig(), None, 128)  # what the `quantized` builds calibrated on
    calib = calibrate_network(net, ONE_PASS, ids)
    one_pass, sequential = quantized(method="gptq", gptq_sequential=False).network, quantized(method="gptq").network
    for name in ("layers.0.attn.qkv", "layers.1.mlp.down"):
        q, _, _ = gptq(weight_of(net, name), calib.inputs[name].hessian, 128)
        assert torch.equal(one_pass.weights[f"{name}.qweight"], nq.pack_int4(q)), name
    # the last linear's inputs went through layer 0 and three linears of layer 1, quantized
    assert not torch.equal(one_pass.weights["layers.1.mlp.down.qweight"], sequential.weights["layers.1.mlp.down.qweight"])
    # sequential GPTQ makes its own Hessians: the calibration pass does not gather them
    assert calibrate_network(net, QuantConfig(method="gptq"), ids).inputs["layers.0.attn.qkv"].hessian is None


def test_sequential_gptq_without_the_token_ids_is_a_clear_error(fp_engine):
    net = fp_engine.network
    stats = calibrate_network(net, ONE_PASS, SEQUENCES).inputs
    calib = Calibration(inputs={k: InputStats(**vars(v)) for k, v in stats.items()})  # statistics, no sequences
    apply_quantization(net, ONE_PASS, calib)
    with pytest.raises(WorkbenchError, match="sequential calibration needs the calibration token ids"):
        apply_quantization(net, QuantConfig(method="gptq"), calib)
