"""The fixed set of ops a network may hold: arity, required attributes and kind (for profiling)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpSpec:
    """What the graph checker knows about an op."""

    arity: tuple[int, ...] | None  # allowed input counts; None = any
    required_attrs: tuple[str, ...] = ()
    kind: str = "elementwise"  # attention | gemm | norm | elementwise | data


OPS: dict[str, OpSpec] = {
    "input": OpSpec((0,), kind="data"),
    "param": OpSpec((0,), kind="data"),
    "identity": OpSpec((1,), kind="data"),
    "embedding": OpSpec((2,), kind="data"),
    "linear": OpSpec((2, 3), kind="gemm"),
    "matmul": OpSpec((2,), kind="gemm"),
    "add": OpSpec((1, 2)),
    "sub": OpSpec((1, 2)),
    "mul": OpSpec((1, 2)),
    "div": OpSpec((1, 2)),
    "neg": OpSpec((1,)),
    "rsqrt": OpSpec((1,)),
    "exp": OpSpec((1,)),
    "tanh": OpSpec((1,)),
    "mean": OpSpec((1,), ("dim", "keepdim"), kind="norm"),
    "rms_norm": OpSpec((2,), ("eps",), kind="norm"),
    "layer_norm": OpSpec((2, 3), ("eps",), kind="norm"),
    "rope": OpSpec((3,), ("attention_scaling",)),
    # 5 inputs: q, k, v, k_scale, v_scale of a quantized KV cache (attr kv_cache_dtype)
    "attention": OpSpec((3, 5), ("layer", "num_heads", "num_kv_heads", "head_dim", "scale"), kind="attention"),
    "silu": OpSpec((1,)),
    "gelu": OpSpec((1,), ("approximate",)),
    "softmax": OpSpec((1,), ("dim",)),
    "reshape": OpSpec((1,), ("shape",), kind="data"),
    "transpose": OpSpec((1,), ("dim0", "dim1"), kind="data"),
    "concat": OpSpec(None, ("dim",), kind="data"),
    "slice": OpSpec((1,), ("dim", "start", "end"), kind="data"),
    "cast": OpSpec((1,), ("dtype",), kind="data"),
    # x then the operands its `operands` attr names (qweight, scales, zeros, smooth, act_scale, bias);
    # method w8a16 | w4a16 | w8a8 | fp8: see workbench/runtime/quant_ops.py
    "quant_linear": OpSpec(None, ("method", "operands"), kind="gemm"),
}


def op_kind(op: str) -> str:
    """The profiling category of an op."""
    return OPS[op].kind
