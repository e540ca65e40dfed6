"""The Llama family: Llama 2/3 (rope scaling), Mistral (sliding window), Qwen2 (qkv bias), SmolLM2.

Config dataclass, the model as modules, HF checkpoint conversion and the HF name map.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from workbench.builder import functional as F
from workbench.builder.layers import Attention, DecoderLayer, Embedding, GatedMLP, Linear, Module, ModuleList, RmsNorm
from workbench.builder.models.base import HFCapture
from workbench.builder.network import Network
from workbench.errors import ConversionError

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
_LLAMA3_ROPE_FIELDS = ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


@dataclass
class LlamaConfig:
    """The fields of an HF config.json that the family uses."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    activation: str = "silu"
    sliding_windows: list = field(default_factory=list)  # per layer: window size or None
    bos_token_id: int | None = None
    eos_token_ids: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON form for engine.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LlamaConfig":
        """Inverse of to_dict."""
        return cls(**d)

    @classmethod
    def from_hf(cls, cfg: dict, source: str = "config.json") -> "LlamaConfig":
        """Read an HF config.json dict; missing or inconsistent fields raise ConversionError."""

        def need(key):
            if key not in cfg or cfg[key] is None:
                raise ConversionError(f"{source}: missing field {key!r}")
            return cfg[key]

        def number(key, value, kind=int):
            # int("abc") would raise a bare ValueError; a size of 0 or -3 would make nonsense shapes
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or \
                    (kind is int and value != int(value)):
                what = "a positive integer" if kind is int else "a positive number"
                raise ConversionError(f"{source}: field {key!r} must be {what}, got {value!r}")
            return kind(value)

        arch = (cfg.get("architectures") or [None])[0]
        hidden = number("hidden_size", need("hidden_size"))
        heads = number("num_attention_heads", need("num_attention_heads"))
        head_dim = number("head_dim", cfg.get("head_dim") or hidden // heads)
        kv_heads = number("num_key_value_heads", cfg.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise ConversionError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        layers = number("num_hidden_layers", need("num_hidden_layers"))
        act = cfg.get("hidden_act", "silu")
        if act not in _ACTIVATIONS:
            raise ConversionError(f"{source}: hidden_act {act!r} is not supported; supported: {', '.join(_ACTIVATIONS)}")
        rope = dict(cfg.get("rope_parameters") or {})
        legacy = cfg.get("rope_scaling") or {}
        rope_theta = number("rope_theta", rope.get("rope_theta", cfg.get("rope_theta", 10000.0)), float)
        scaling = {**legacy, **{k: v for k, v in rope.items() if k != "rope_theta"}}
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type not in ("default", "linear", "llama3"):
            raise ConversionError(f"{source}: rope type {rope_type!r} is not supported; supported: default, linear, llama3")
        scaling = None if rope_type == "default" else {**scaling, "rope_type": rope_type}
        if scaling is not None:
            required = ("factor",) + (_LLAMA3_ROPE_FIELDS if rope_type == "llama3" else ())
            for key in required:
                if scaling.get(key) is None:
                    raise ConversionError(f"{source}: rope type {rope_type!r} needs field {key!r} in rope_parameters")
                number(key, scaling[key], float)
        eos = cfg.get("eos_token_id")
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        is_qwen2 = arch == "Qwen2ForCausalLM"
        return cls(
            architecture=arch, vocab_size=number("vocab_size", need("vocab_size")), hidden_size=hidden,
            intermediate_size=number("intermediate_size", need("intermediate_size")), num_layers=layers, num_heads=heads,
            num_kv_heads=kv_heads, head_dim=head_dim, rms_norm_eps=number("rms_norm_eps", cfg.get("rms_norm_eps", 1e-6), float),
            rope_theta=rope_theta, rope_scaling=scaling,
            max_position_embeddings=number("max_position_embeddings", cfg.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=True if is_qwen2 else bool(cfg.get("attention_bias", False)),
            o_bias=False if is_qwen2 else bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)), activation=_ACTIVATIONS[act],
            sliding_windows=_sliding_windows(cfg, arch, layers),
            bos_token_id=cfg.get("bos_token_id"), eos_token_ids=eos_ids,
        )


def _sliding_windows(cfg: dict, arch: str, layers: int) -> list:
    window = cfg.get("sliding_window")
    if arch == "MistralForCausalLM":
        return [window] * layers
    if arch == "Qwen2ForCausalLM" and cfg.get("use_sliding_window") and window:
        types = cfg.get("layer_types") or ["sliding_attention" if i >= cfg.get("max_window_layers", layers) else
                                           "full_attention" for i in range(layers)]
        return [window if t == "sliding_attention" else None for t in types]
    return [None] * layers


def rope_inv_freq(config: LlamaConfig) -> torch.Tensor:
    """Inverse RoPE frequencies [D/2] in float32, with linear or llama3 scaling applied."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).to(torch.float) / d))
    s = config.rope_scaling
    if s is None:
        return inv_freq
    factor = float(s["factor"])
    if s["rope_type"] == "linear":
        return inv_freq / factor
    # llama3: keep high frequencies, divide low ones by `factor`, interpolate in between
    low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old_len = float(s["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class LlamaForCausalLM(Module):
    """Token ids [T] -> logits [T, V]; canonical names as in DESIGN.md."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        c = config
        object.__setattr__(self, "config", c)
        self.embed = Embedding(c.vocab_size, c.hidden_size)
        self.layers = ModuleList([
            DecoderLayer(
                c.hidden_size, c.rms_norm_eps,
                Attention(c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, layer=i, qkv_bias=c.qkv_bias,
                          o_bias=c.o_bias, sliding_window=c.sliding_windows[i] if c.sliding_windows else None),
                GatedMLP(c.hidden_size, c.intermediate_size, activation=c.activation, bias=c.mlp_bias),
            )
            for i in range(c.num_layers)
        ])
        self.final_norm = RmsNorm(c.hidden_size, c.rms_norm_eps)
        if not c.tie_word_embeddings:
            self.logits = Linear(c.hidden_size, c.vocab_size)
        self.bind()

    def to_network(self, dtype: str = "float32") -> Network:
        """Trace the model into a network whose inputs are `input_ids` [T] and `positions` [T]."""
        net = Network(dtype)
        ids = net.input("input_ids", "int64", ["T"])
        positions = net.input("positions", "int64", ["T"])
        inv_freq = net.param("rope.inv_freq", rope_inv_freq(self.config))
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, positions, inv_freq)
        x = self.final_norm(x)
        if self.config.tie_word_embeddings:
            logits = F.linear(x, self.embed.const(net, "weight"), name="logits")
        else:
            logits = self.logits(x)
        net.set_outputs(logits)
        return net


def hf_state_to_engine(config: LlamaConfig, hf: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Convert HF weights to engine names, fusing q,k,v and gate,up; every key and shape is asserted."""
    c = config
    hq, hkv, h, i_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_size, c.intermediate_size
    used: set[str] = set()

    def take(key: str, shape: tuple) -> torch.Tensor:
        if key not in hf:
            raise ConversionError(f"{source}: missing weight {key!r}")
        t = hf[key]
        if not t.is_floating_point():
            raise ConversionError(f"{source}: weight {key!r} has dtype {t.dtype}, expected a floating-point tensor")
        if tuple(t.shape) != tuple(shape):
            raise ConversionError(f"{source}: weight {key!r} has shape {list(t.shape)}, expected {list(shape)}")
        used.add(key)
        return t

    out = {"embed.weight": take("model.embed_tokens.weight", (c.vocab_size, h))}
    for i in range(c.num_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        att = p + "self_attn."
        out[q + "input_norm.weight"] = take(p + "input_layernorm.weight", (h,))
        out[q + "attn.qkv.weight"] = torch.cat([take(att + "q_proj.weight", (hq, h)), take(att + "k_proj.weight", (hkv, h)),
                                                take(att + "v_proj.weight", (hkv, h))])
        if c.qkv_bias:
            out[q + "attn.qkv.bias"] = torch.cat([take(att + "q_proj.bias", (hq,)), take(att + "k_proj.bias", (hkv,)),
                                                  take(att + "v_proj.bias", (hkv,))])
        out[q + "attn.o_proj.weight"] = take(att + "o_proj.weight", (h, hq))
        if c.o_bias:
            out[q + "attn.o_proj.bias"] = take(att + "o_proj.bias", (h,))
        out[q + "post_norm.weight"] = take(p + "post_attention_layernorm.weight", (h,))
        mlp = p + "mlp."
        out[q + "mlp.gate_up.weight"] = torch.cat([take(mlp + "gate_proj.weight", (i_size, h)), take(mlp + "up_proj.weight", (i_size, h))])
        out[q + "mlp.down.weight"] = take(mlp + "down_proj.weight", (h, i_size))
        if c.mlp_bias:
            out[q + "mlp.gate_up.bias"] = torch.cat([take(mlp + "gate_proj.bias", (i_size,)), take(mlp + "up_proj.bias", (i_size,))])
            out[q + "mlp.down.bias"] = take(mlp + "down_proj.bias", (h,))
    out["final_norm.weight"] = take("model.norm.weight", (h,))
    if c.tie_word_embeddings:
        if "lm_head.weight" in hf:  # some tied checkpoints store the shared table twice
            take("lm_head.weight", (c.vocab_size, h))
    else:
        out["logits.weight"] = take("lm_head.weight", (c.vocab_size, h))
    ignorable = {k for k in hf if k.endswith("rotary_emb.inv_freq")}
    extra = sorted(set(hf) - used - ignorable)
    if extra:
        raise ConversionError(f"{source}: unexpected weight {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    return out


def hf_name_map(config: LlamaConfig) -> dict[str, HFCapture]:
    """Canonical name -> where the HF model computes the same tensor."""
    m = {"embed": HFCapture("output", ("model.embed_tokens",))}
    for i in range(config.num_layers):
        p, q = f"model.layers.{i}", f"layers.{i}"
        att = p + ".self_attn"
        m[q + ".input_norm"] = HFCapture("output", (p + ".input_layernorm",))
        m[q + ".attn.qkv"] = HFCapture("concat_outputs", (att + ".q_proj", att + ".k_proj", att + ".v_proj"))
        m[q + ".attn.core"] = HFCapture("input", (att + ".o_proj",))
        m[q + ".attn"] = HFCapture("output", (att,))
        m[q + ".post_norm"] = HFCapture("output", (p + ".post_attention_layernorm",))
        m[q + ".mlp"] = HFCapture("output", (p + ".mlp",))
        m[q] = HFCapture("output", (p,))
    m["final_norm"] = HFCapture("output", ("model.norm",))
    m["logits"] = HFCapture("output", ("lm_head",))
    return m
