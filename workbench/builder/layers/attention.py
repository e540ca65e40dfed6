"""Self-attention with fused q,k,v, rotary embedding, GQA/MQA and a KV cache (the attention op)."""

from __future__ import annotations

from workbench.builder import functional as F
from workbench.builder.layers.basic import Linear
from workbench.builder.layers.module import Module
from workbench.builder.network import Tensor


class Attention(Module):
    """x [T, H] -> [T, H]; names: `qkv`, `core` (input of `o_proj`), and the block output."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, *, layer: int,
                 qkv_bias: bool = False, o_bias: bool = False, attention_scaling: float = 1.0,
                 sliding_window: int | None = None):
        super().__init__()
        self.qkv = Linear(hidden_size, (num_heads + 2 * num_kv_heads) * head_dim, bias=qkv_bias)
        self.o_proj = Linear(num_heads * head_dim, hidden_size, bias=o_bias)
        for k, v in dict(num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, layer=layer,
                         attention_scaling=attention_scaling, sliding_window=sliding_window).items():
            object.__setattr__(self, k, v)

    def forward(self, x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
        hq, hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv(x)  # [T, (Hq + 2 Hkv) D]
        q, k, v = F.split(qkv, [hq * d, hkv * d, hkv * d], dim=-1, names=["q", "k", "v"])
        q = F.reshape(q, [-1, hq, d], name="q_heads")  # [T, Hq, D]
        k = F.reshape(k, [-1, hkv, d], name="k_heads")  # [T, Hkv, D]
        v = F.reshape(v, [-1, hkv, d], name="v_heads")
        q = F.rope(q, positions, inv_freq, self.attention_scaling, name="q_rope")
        k = F.rope(k, positions, inv_freq, self.attention_scaling, name="k_rope")
        o = F.attention(q, k, v, layer=self.layer, sliding_window=self.sliding_window, name="sdpa")  # [T, Hq, D]
        core = F.reshape(o, [-1, hq * d], name="core")  # [T, Hq D]
        return self.o_proj(core)
