"""The gated MLP of Llama-style models: down(act(gate(x)) * up(x)), gate and up fused."""

from __future__ import annotations

from workbench.builder import functional as F
from workbench.builder.layers.basic import Linear
from workbench.builder.layers.module import Module
from workbench.builder.network import GraphError, Tensor


class GatedMLP(Module):
    """x [T, H] -> [T, H] through `gate_up` [T, 2I], `act` [T, I] and `down`."""

    def __init__(self, hidden_size: int, intermediate_size: int, *, activation: str = "silu", bias: bool = False):
        super().__init__()
        if activation not in ("silu", "gelu", "gelu_tanh"):
            raise GraphError(f"GatedMLP: unsupported activation {activation!r}")
        self.gate_up = Linear(hidden_size, 2 * intermediate_size, bias=bias)
        self.down = Linear(intermediate_size, hidden_size, bias=bias)
        object.__setattr__(self, "intermediate_size", intermediate_size)
        object.__setattr__(self, "activation", activation)

    def forward(self, x: Tensor) -> Tensor:
        n = self.intermediate_size
        gate, up = F.split(self.gate_up(x), [n, n], dim=-1, names=["gate", "up"])
        if self.activation == "silu":
            gate = F.silu(gate, name="gate_act")
        else:
            gate = F.gelu(gate, "tanh" if self.activation == "gelu_tanh" else "none", name="gate_act")
        return self.down(F.mul(gate, up, name="act"))
