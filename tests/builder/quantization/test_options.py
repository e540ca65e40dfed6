"""The GPTQ and AWQ options travel from the command line through QuantConfig and the engine's build config."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from workbench.builder.config import BuildConfig
from workbench.builder.quantization import QuantConfig
from workbench.cli.quant_options import quant_options
from workbench.errors import WorkbenchError


@click.command()
@quant_options
def show(quant):
    click.echo(json.dumps(quant.to_dict() if quant else None))


def _parse(*args: str) -> dict | None:
    result = CliRunner().invoke(show, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_sequential_gptq_and_awq_clipping_are_on_by_default_and_can_be_turned_off():
    on = _parse("--quant", "gptq")
    assert on["gptq_sequential"] is True and on["awq_clip"] is True
    assert QuantConfig().gptq_sequential and QuantConfig().awq_clip
    off = _parse("--quant", "awq", "--no-gptq-sequential", "--no-awq-clip", "--act-order")
    assert off["gptq_sequential"] is False and off["awq_clip"] is False and off["act_order"] is True
    assert _parse("--quant", "gptq", "--gptq-sequential")["gptq_sequential"] is True


def test_the_options_round_trip_through_the_build_config():
    config = BuildConfig(quant=QuantConfig(method="gptq", gptq_sequential=False, awq_clip=False))
    back = BuildConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and back.quant.gptq_sequential is False and back.quant.awq_clip is False
    old = {k: v for k, v in QuantConfig(method="gptq").to_dict().items() if k not in ("gptq_sequential", "awq_clip")}
    assert QuantConfig.from_dict(old).gptq_sequential  # a config written before the options existed


@pytest.mark.parametrize("key", ["gptq_sequential", "awq_clip", "act_order"])
def test_a_flag_that_is_not_a_boolean_is_an_error(key):
    with pytest.raises(WorkbenchError, match=f"{key} must be true or false"):
        QuantConfig.from_dict({"method": "gptq", key: "false"})  # a string would be truthy


def test_quant_logits_adds_the_logits_layer_to_the_targets():
    assert "logits" not in _parse("--quant", "int8_wo")["targets"]
    targets = _parse("--quant", "int8_wo", "--quant-logits")["targets"]
    assert targets[-1] == "logits" and "layers.*.mlp.down" in targets
    result = CliRunner().invoke(show, ["--quant-logits"])
    assert result.exit_code != 0 and "--quant-logits needs --quant METHOD" in str(result.exception)
