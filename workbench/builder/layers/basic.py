"""Embedding, Linear and the norms."""

from __future__ import annotations

from workbench.builder import functional as F
from workbench.builder.layers.module import Module, Parameter
from workbench.builder.network import Tensor


class Embedding(Module):
    """Token embeddings: ids [T] -> [T, H]."""

    def __init__(self, vocab_size: int, hidden_size: int):
        super().__init__()
        self.weight = Parameter(vocab_size, hidden_size)

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.const(ids.net, "weight"))


class Linear(Module):
    """y = x W^T + b, W stored [out, in]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(out_features, in_features)
        if bias:
            self.bias = Parameter(out_features)
        object.__setattr__(self, "has_bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        net = x.net
        bias = self.const(net, "bias") if self.has_bias else None
        return F.linear(x, self.const(net, "weight"), bias)


class RmsNorm(Module):
    """RMSNorm with a learned scale."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = Parameter(hidden_size)
        object.__setattr__(self, "eps", eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.const(x.net, "weight"), self.eps)


class LayerNorm(Module):
    """LayerNorm with scale and optional bias."""

    def __init__(self, hidden_size: int, eps: float, bias: bool = True):
        super().__init__()
        self.weight = Parameter(hidden_size)
        if bias:
            self.bias = Parameter(hidden_size)
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "has_bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.const(x.net, "bias") if self.has_bias else None
        return F.layer_norm(x, self.const(x.net, "weight"), bias, self.eps)
