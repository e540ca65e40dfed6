"""A pre-norm decoder layer: x + attn(norm(x)), then + mlp(norm(.))."""

from __future__ import annotations

from workbench.builder import functional as F
from workbench.builder.layers.attention import Attention
from workbench.builder.layers.basic import RmsNorm
from workbench.builder.layers.mlp import GatedMLP
from workbench.builder.layers.module import Module
from workbench.builder.network import Tensor


class DecoderLayer(Module):
    """One transformer block; its output node is the residual stream `layers.i`."""

    def __init__(self, hidden_size: int, eps: float, attn: Attention, mlp: GatedMLP):
        super().__init__()
        self.input_norm = RmsNorm(hidden_size, eps)
        self.attn = attn
        self.post_norm = RmsNorm(hidden_size, eps)
        self.mlp = mlp

    def forward(self, x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
        h = F.add(x, self.attn(self.input_norm(x), positions, inv_freq), name="attn_residual")
        return F.add(h, self.mlp(self.post_norm(h)), name="mlp_residual")
