"""The reference backend: each graph op as plain PyTorch, with HF's numerics (fp32 norms and softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from workbench.builder.network import Node, torch_dtype
from workbench.runtime.attention_meta import AttentionMeta
from workbench.runtime.quant_ops import dequantize_kv, quant_linear, quantize_kv


def _binary(fn):
    def run(node: Node, xs, meta):
        b = xs[1] if len(xs) == 2 else node.attrs["scalar"]
        return fn(xs[0], b)

    return run


def rms_norm(node: Node, xs, meta):
    x, w = xs
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + node.attrs["eps"])
    return w * h.to(x.dtype)


def layer_norm(node: Node, xs, meta):
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) == 3 else None
    return TF.layer_norm(x, (x.shape[-1],), w, b, node.attrs["eps"])


def rope(node: Node, xs, meta):
    x, positions, inv_freq = xs  # [T, H, D], [T], [D/2]
    key = ("rope", id(positions), id(inv_freq), x.dtype, node.attrs["attention_scaling"])
    cached = meta.memo.get(key) if meta is not None else None
    if cached is None or cached[0] is not positions:  # same for every layer of a step: computed once, as HF does
        freqs = positions[:, None].to(torch.float32) * inv_freq[None, :].to(torch.float32)  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = node.attrs["attention_scaling"]
        cached = (positions, (emb.cos() * scale).to(x.dtype)[:, None, :], (emb.sin() * scale).to(x.dtype)[:, None, :])
        if meta is not None:
            meta.memo[key] = cached
    _, cos, sin = cached  # [T, 1, D] each
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def attention(node: Node, xs, meta: AttentionMeta):
    """Causal (optionally sliding-window) GQA attention per sequence, through the KV cache if any."""
    q, k, v = xs[:3]  # [T, Hq, D], [T, Hkv, D], [T, Hkv, D]
    a = node.attrs
    kv_dtype = a.get("kv_cache_dtype")  # int8 | fp8: quantize on write, dequantize on read
    if kv_dtype:
        k_scale, v_scale = xs[3], xs[4]
        k, v = quantize_kv(k, k_scale, kv_dtype), quantize_kv(v, v_scale, kv_dtype)
    rep = a["num_heads"] // a["num_kv_heads"]
    window = a.get("sliding_window")
    out = torch.empty_like(q)
    start = 0
    for sid, n, past in zip(meta.seq_ids, meta.q_lens, meta.past_lens):
        qi, ki, vi = q[start:start + n], k[start:start + n], v[start:start + n]
        if meta.cache is not None:
            meta.cache.write(a["layer"], sid, past, ki, vi)
            ki, vi = meta.cache.read(a["layer"], sid, past + n)  # [L, Hkv, D]
        elif past:
            raise ValueError("attention: a past length without a KV cache")
        if kv_dtype:
            ki, vi = dequantize_kv(ki, k_scale, q.dtype), dequantize_kv(vi, v_scale, q.dtype)
        length, hkv, d = past + n, ki.shape[1], ki.shape[2]
        # GQA without copying K/V per query head: the `rep` query heads of one KV head
        # (heads j*rep .. j*rep+rep-1, as HF's repeat_kv pairs them) share one matmul.
        qg = qi.reshape(n, hkv, rep, d).permute(1, 2, 0, 3).reshape(hkv, rep * n, d)  # [Hkv, rep n, D]
        scores = torch.matmul(qg, ki.permute(1, 2, 0)) * a["scale"]  # [Hkv, rep n, L]
        if n > 1 or window:  # one query at the end of its sequence sees every key unless windowed
            qpos = torch.arange(past, length, device=q.device)[:, None]
            kpos = torch.arange(length, device=q.device)[None, :]
            allowed = kpos <= qpos
            if window:
                allowed &= kpos > qpos - window
            scores = scores.view(hkv, rep, n, length).masked_fill(~allowed, float("-inf")).view(hkv, rep * n, length)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(probs, vi.transpose(0, 1))  # [Hkv, rep n, D]
        out[start:start + n] = o.view(hkv, rep, n, d).permute(2, 0, 1, 3).reshape(n, hkv * rep, d)
        start += n
    return out


def _reshape(node: Node, xs, meta):
    return xs[0].reshape(node.attrs["shape"])


def _slice(node: Node, xs, meta):
    a = node.attrs
    return xs[0].narrow(a["dim"], a["start"], a["end"] - a["start"])


OPS = {
    "identity": lambda node, xs, meta: xs[0],
    "embedding": lambda node, xs, meta: TF.embedding(xs[0], xs[1]),
    "linear": lambda node, xs, meta: TF.linear(*xs),
    "matmul": lambda node, xs, meta: torch.matmul(*xs),
    "add": _binary(torch.add),
    "sub": _binary(torch.sub),
    "mul": _binary(torch.mul),
    "div": _binary(torch.div),
    "neg": lambda node, xs, meta: -xs[0],
    "rsqrt": lambda node, xs, meta: torch.rsqrt(xs[0]),
    "exp": lambda node, xs, meta: torch.exp(xs[0]),
    "tanh": lambda node, xs, meta: torch.tanh(xs[0]),
    "mean": lambda node, xs, meta: xs[0].mean(node.attrs["dim"], keepdim=node.attrs["keepdim"]),
    "rms_norm": rms_norm,
    "layer_norm": layer_norm,
    "rope": rope,
    "attention": attention,
    "silu": lambda node, xs, meta: TF.silu(xs[0]),
    "gelu": lambda node, xs, meta: TF.gelu(xs[0], approximate=node.attrs["approximate"]),
    "softmax": lambda node, xs, meta: torch.softmax(xs[0], node.attrs["dim"], dtype=torch.float32).to(xs[0].dtype),
    "reshape": _reshape,
    "transpose": lambda node, xs, meta: xs[0].transpose(node.attrs["dim0"], node.attrs["dim1"]),
    "concat": lambda node, xs, meta: torch.cat(xs, dim=node.attrs["dim"]),
    "slice": _slice,
    "cast": lambda node, xs, meta: xs[0].to(torch_dtype(node.attrs["dtype"])),
    "quant_linear": quant_linear,
}
