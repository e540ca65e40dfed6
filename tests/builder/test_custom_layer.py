"""A layer a user writes from basic ops: RMSNorm as a Module matches the built-in rms_norm op."""

import pytest
import torch

from tests.conftest import rel_max_err
from workbench.builder import functional as F
from workbench.builder.config import BuildConfig
from workbench.builder.engine import Engine
from workbench.builder.layers import Embedding, Module, Parameter, RmsNorm
from workbench.builder.network import Network, Tensor
from workbench.runtime.executor import Executor


class MyRmsNorm(Module):
    """weight * x / sqrt(mean(x^2) + eps), reduced in float32 like HF's LlamaRMSNorm."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = Parameter(hidden_size)
        object.__setattr__(self, "eps", eps)

    def forward(self, x: Tensor) -> Tensor:
        h = F.cast(x, "float32")
        var = F.mean(F.mul(h, h), dim=-1, keepdim=True)  # [T, 1]
        h = F.mul(h, F.rsqrt(F.add(var, self.eps)))
        return F.mul(self.const(x.net, "weight"), F.cast(h, x.dtype))


class TwoNorms(Module):
    """Embeds ids, then applies both norms to the same tensor with the same weight."""

    def __init__(self, vocab: int, hidden: int, eps: float):
        super().__init__()
        self.embed = Embedding(vocab, hidden)
        self.builtin = RmsNorm(hidden, eps)
        self.custom = MyRmsNorm(hidden, eps)
        self.bind()

    def to_network(self, dtype: str) -> Network:
        net = Network(dtype)
        ids = net.input("input_ids", "int64", ["T"])
        net.input("positions", "int64", ["T"])
        x = self.embed(ids)
        net.set_outputs(self.builtin(x), self.custom(x))
        return net


@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-6), ("bf16", 0.0), ("fp16", 0.0)])
def test_custom_rms_norm_matches_builtin(dtype, tol, prompts):
    vocab, hidden, eps = 128, 64, 1e-5
    g = torch.Generator().manual_seed(0)
    weight = 1 + 0.3 * torch.randn(hidden, generator=g)
    model = TwoNorms(vocab, hidden, eps)
    model.load_state_dict({"embed.weight": 3 * torch.randn(vocab, hidden, generator=g),
                           "builtin.weight": weight, "custom.weight": weight})
    net = model.to_network(BuildConfig(dtype=dtype).dtype)
    net.validate()
    dump = net.dump()
    assert "builtin: " in dump and "= rms_norm(embed, builtin.weight) {eps=1e-05}" in dump
    assert "custom: " in dump and "custom.rsqrt" in dump and "rms_norm(embed, custom" not in dump
    engine = Engine(network=net, architecture="test", model_config={}, build_config=BuildConfig(dtype=dtype))
    for out in Executor(engine).forward(prompts):
        assert out["custom"].dtype == out["builtin"].dtype == net.weights["builtin.weight"].dtype
        assert rel_max_err(out["custom"], out["builtin"]) <= tol
