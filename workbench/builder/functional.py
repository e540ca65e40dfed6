"""PyTorch-like ops that append nodes to the network their inputs belong to (no hidden global).

Every op takes an optional `name`, relative to the network's current scope. Shapes are
inferred as the graph is built; "T" is the symbolic number of tokens in a batch.
"""

from __future__ import annotations

import math

from workbench.builder.network import GraphError, Tensor

Scalar = int | float


def _shape_numel(shape) -> int | None:
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def _broadcast(a: list, b: list, op: str) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise GraphError(f"{op}: shapes {a} and {b} do not broadcast")
    return out[::-1]


def _binary(op: str, a: Tensor, b: Tensor | Scalar, name: str | None) -> Tensor:
    if isinstance(b, Tensor):
        if a.dtype != b.dtype:
            raise GraphError(f"{op}: dtypes differ ({a.name}: {a.dtype}, {b.name}: {b.dtype}); cast first")
        return a.net.add(op, [a, b], name=name, dtype=a.dtype, shape=_broadcast(a.shape, b.shape, op))
    return a.net.add(op, [a], {"scalar": float(b)}, name=name, dtype=a.dtype, shape=a.shape)


def add(a: Tensor, b: Tensor | Scalar, name: str | None = None) -> Tensor:
    """a + b (broadcasting; b may be a Python number)."""
    return _binary("add", a, b, name)


def sub(a: Tensor, b: Tensor | Scalar, name: str | None = None) -> Tensor:
    """a - b."""
    return _binary("sub", a, b, name)


def mul(a: Tensor, b: Tensor | Scalar, name: str | None = None) -> Tensor:
    """a * b."""
    return _binary("mul", a, b, name)


def div(a: Tensor, b: Tensor | Scalar, name: str | None = None) -> Tensor:
    """a / b."""
    return _binary("div", a, b, name)


def _unary(op: str, x: Tensor, name: str | None, **attrs) -> Tensor:
    return x.net.add(op, [x], attrs, name=name, dtype=x.dtype, shape=x.shape)


def neg(x: Tensor, name: str | None = None) -> Tensor:
    """-x."""
    return _unary("neg", x, name)


def rsqrt(x: Tensor, name: str | None = None) -> Tensor:
    """1 / sqrt(x)."""
    return _unary("rsqrt", x, name)


def exp(x: Tensor, name: str | None = None) -> Tensor:
    """e ** x."""
    return _unary("exp", x, name)


def tanh(x: Tensor, name: str | None = None) -> Tensor:
    """tanh(x)."""
    return _unary("tanh", x, name)


def silu(x: Tensor, name: str | None = None) -> Tensor:
    """x * sigmoid(x)."""
    return _unary("silu", x, name)


def gelu(x: Tensor, approximate: str = "none", name: str | None = None) -> Tensor:
    """GELU, exact (`none`) or the `tanh` approximation."""
    if approximate not in ("none", "tanh"):
        raise GraphError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _unary("gelu", x, name, approximate=approximate)


def softmax(x: Tensor, dim: int = -1, name: str | None = None) -> Tensor:
    """Softmax along `dim`, computed in float32 and returned in x's dtype."""
    return _unary("softmax", x, name, dim=dim)


def mean(x: Tensor, dim: int = -1, keepdim: bool = True, name: str | None = None) -> Tensor:
    """Mean along one dim."""
    d = dim % len(x.shape)
    shape = [1 if i == d else s for i, s in enumerate(x.shape)] if keepdim else [s for i, s in enumerate(x.shape) if i != d]
    return x.net.add("mean", [x], {"dim": dim, "keepdim": keepdim}, name=name, dtype=x.dtype, shape=shape)


def cast(x: Tensor, dtype: str, name: str | None = None) -> Tensor:
    """Convert to another dtype (`float32`, `float16`, `bfloat16`, ...)."""
    return x.net.add("cast", [x], {"dtype": dtype}, name=name, dtype=dtype, shape=x.shape)


def embedding(ids: Tensor, weight: Tensor, name: str | None = None) -> Tensor:
    """Rows of `weight` [V, H] selected by integer `ids` [...]: [..., H]."""
    if not ids.dtype.startswith("int"):
        raise GraphError(f"embedding: ids {ids.name!r} must be integers, got {ids.dtype}")
    return ids.net.add("embedding", [ids, weight], name=name, dtype=weight.dtype, shape=ids.shape + [weight.shape[1]])


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, name: str | None = None) -> Tensor:
    """x @ weight.T + bias, with weight stored [out, in] as in PyTorch and HF."""
    out_f, in_f = weight.shape
    if isinstance(x.shape[-1], int) and x.shape[-1] != in_f:
        raise GraphError(f"linear {name or ''}: input {x.name!r} has {x.shape[-1]} features, weight expects {in_f}")
    inputs = [x, weight] + ([bias] if bias is not None else [])
    return x.net.add("linear", inputs, name=name, dtype=x.dtype, shape=x.shape[:-1] + [out_f])


def matmul(a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
    """a @ b over the last two dims."""
    if a.shape[-1] != b.shape[-2]:
        raise GraphError(f"matmul: {a.shape} @ {b.shape} do not agree")
    batch = _broadcast(a.shape[:-2], b.shape[:-2], "matmul")
    return a.net.add("matmul", [a, b], name=name, dtype=a.dtype, shape=batch + [a.shape[-2], b.shape[-1]])


def rms_norm(x: Tensor, weight: Tensor, eps: float, name: str | None = None) -> Tensor:
    """weight * x / sqrt(mean(x^2) + eps), the reduction in float32."""
    return x.net.add("rms_norm", [x, weight], {"eps": float(eps)}, name=name, dtype=x.dtype, shape=x.shape)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float, name: str | None = None) -> Tensor:
    """LayerNorm over the last dim."""
    inputs = [x, weight] + ([bias] if bias is not None else [])
    return x.net.add("layer_norm", inputs, {"eps": float(eps)}, name=name, dtype=x.dtype, shape=x.shape)


def rope(x: Tensor, positions: Tensor, inv_freq: Tensor, attention_scaling: float = 1.0,
         name: str | None = None) -> Tensor:
    """Rotary embedding (rotate-half layout) of x [T, H, D] at `positions` [T] with `inv_freq` [D/2].

    Scaling variants (linear, llama3) differ only in inv_freq and attention_scaling, which
    the model computes at build time.
    """
    if x.shape[-1] != 2 * inv_freq.shape[0]:
        raise GraphError(f"rope: head dim {x.shape[-1]} needs inv_freq of {x.shape[-1] // 2}, got {inv_freq.shape[0]}")
    return x.net.add("rope", [x, positions, inv_freq], {"attention_scaling": float(attention_scaling)},
                     name=name, dtype=x.dtype, shape=x.shape)


def attention(q: Tensor, k: Tensor, v: Tensor, *, layer: int, scale: float | None = None,
              sliding_window: int | None = None, name: str | None = None) -> Tensor:
    """Causal attention of q [T, Hq, D] over the KV cache extended by k, v [T, Hkv, D]: [T, Hq, D].

    One op, implemented by each backend as a plugin; the runtime supplies sequence
    boundaries, past lengths and the KV cache. Hq must be a multiple of Hkv (GQA/MQA).
    """
    _, hq, d = q.shape
    _, hkv, dk = k.shape
    if hq % hkv or d != dk or list(k.shape) != list(v.shape):
        raise GraphError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} are not a valid GQA triple")
    attrs = {"layer": layer, "num_heads": hq, "num_kv_heads": hkv, "head_dim": d,
             "scale": float(scale if scale is not None else 1.0 / math.sqrt(d)), "sliding_window": sliding_window}
    return q.net.add("attention", [q, k, v], attrs, name=name, dtype=q.dtype, shape=q.shape)


def reshape(x: Tensor, shape: list, name: str | None = None) -> Tensor:
    """View with a new shape; one -1 takes the rest (symbolic if x has a symbolic dim)."""
    shape = list(shape)
    if shape.count(-1) > 1:
        raise GraphError(f"reshape: at most one -1 in {shape}")
    if -1 in shape:
        known = [d for d in shape if d != -1]
        total, part = _shape_numel(x.shape), _shape_numel(known)
        if total is not None and part is not None:
            if total % part:
                raise GraphError(f"reshape: {x.shape} cannot become {shape}")
            fill = total // part
        else:
            syms = [d for d in x.shape if not isinstance(d, int)]
            static_in = _shape_numel([d for d in x.shape if isinstance(d, int)])
            static_out = _shape_numel([d for d in known if isinstance(d, int)])
            if len(syms) != 1 or any(not isinstance(d, int) for d in known) or static_in != static_out:
                raise GraphError(f"reshape: cannot infer -1 in {shape} from {x.shape}")
            fill = syms[0]
        shape[shape.index(-1)] = fill
    return x.net.add("reshape", [x], {"shape": [-1 if not isinstance(d, int) else d for d in shape]},
                     name=name, dtype=x.dtype, shape=shape)


def transpose(x: Tensor, dim0: int, dim1: int, name: str | None = None) -> Tensor:
    """Swap two dims."""
    shape = list(x.shape)
    shape[dim0], shape[dim1] = shape[dim1], shape[dim0]
    return x.net.add("transpose", [x], {"dim0": dim0, "dim1": dim1}, name=name, dtype=x.dtype, shape=shape)


def concat(xs: list[Tensor], dim: int = -1, name: str | None = None) -> Tensor:
    """Join tensors along `dim`."""
    first = xs[0]
    d = dim % len(first.shape)
    sizes = [t.shape[d] for t in xs]
    shape = list(first.shape)
    shape[d] = sum(sizes) if all(isinstance(s, int) for s in sizes) else "+".join(map(str, sizes))
    return first.net.add("concat", xs, {"dim": dim}, name=name, dtype=first.dtype, shape=shape)


def slice(x: Tensor, dim: int, start: int, end: int, name: str | None = None) -> Tensor:  # noqa: A001
    """x[..., start:end, ...] along `dim`."""
    d = dim % len(x.shape)
    size = x.shape[d]
    if isinstance(size, int) and not (0 <= start < end <= size):
        raise GraphError(f"slice {start}:{end} out of range for dim {dim} of size {size}")
    shape = list(x.shape)
    shape[d] = end - start
    return x.net.add("slice", [x], {"dim": dim, "start": start, "end": end}, name=name, dtype=x.dtype, shape=shape)


def split(x: Tensor, sizes: list[int], dim: int = -1, names: list[str] | None = None) -> list[Tensor]:
    """Consecutive slices of the given sizes along `dim`."""
    out, start = [], 0
    for i, n in enumerate(sizes):
        out.append(slice(x, dim, start, start + n, name=names[i] if names else None))
        start += n
    return out
