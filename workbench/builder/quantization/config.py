"""QuantConfig: which quantization the builder applies, its options and its calibration data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from workbench.errors import WorkbenchError

METHODS = ("int8_wo", "int4_wo", "smoothquant", "gptq", "awq", "fp8")
KV_CACHE_DTYPES = ("int8", "fp8")
NEEDS_CALIBRATION = {"smoothquant", "gptq", "awq", "fp8"}  # weight methods; KV-cache scales always need it
DEFAULT_TARGETS = ["layers.*.attn.qkv", "layers.*.attn.o_proj", "layers.*.mlp.gate_up", "layers.*.mlp.down"]


@dataclass
class QuantConfig:
    """A weight method (or None), a KV-cache dtype (or None), the method's options and calibration."""

    method: str | None = None  # one of METHODS
    kv_cache_dtype: str | None = None  # one of KV_CACHE_DTYPES
    kv_scale: str = "per_head"  # per_head | per_tensor
    group_size: int = 128  # int4_wo, gptq, awq: input channels per scale
    sq_alpha: float = 0.5  # smoothquant migration strength
    sq_weights: str = "per_channel"  # per_channel | per_tensor
    sq_acts: str = "per_token"  # per_token (dynamic) | per_tensor (static, calibrated)
    act_order: bool = False  # gptq: quantize columns by decreasing Hessian diagonal
    gptq_damp: float = 0.01  # gptq: fraction of the mean Hessian diagonal added to it
    gptq_block_size: int = 32  # gptq: columns per lazy batch update (same result for any size; 32 is fastest on CPU)
    gptq_sequential: bool = True  # gptq: each linear's Hessian from the network with the earlier linears quantized
    awq_grid: int = 20  # awq: points of the scale-exponent grid in [0, 1)
    awq_clip: bool = True  # awq: after scaling, search a range shrink per output channel and group
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))  # linear nodes to quantize
    exclude: list[str] = field(default_factory=list)  # patterns kept in the engine dtype
    calib_prompts: list[str] = field(default_factory=list)  # text; empty: the built-in prompts
    calib_file: str | None = None  # a text file, cut into calib_seq_len-token samples
    calib_samples: int = 16
    calib_seq_len: int = 128
    seed: int = 0  # token ids used when a checkpoint has no tokenizer

    def __post_init__(self):
        if self.method is not None and self.method not in METHODS:
            raise WorkbenchError(f"unknown quantization {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.kv_cache_dtype is not None and self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise WorkbenchError(f"unknown KV cache dtype {self.kv_cache_dtype!r}; choose int8 or fp8")
        choices = {"kv_scale": ("per_head", "per_tensor"), "sq_weights": ("per_channel", "per_tensor"),
                   "sq_acts": ("per_token", "per_tensor")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise WorkbenchError(f"quant config: {key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("act_order", "gptq_sequential", "awq_clip"):
            if not isinstance(getattr(self, key), bool):  # from JSON, "false" would be truthy
                raise WorkbenchError(f"quant config: {key} must be true or false, got {getattr(self, key)!r}")
        for key in ("group_size", "gptq_block_size", "awq_grid", "calib_samples", "calib_seq_len"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WorkbenchError(f"quant config: {key} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.sq_alpha) <= 1.0:
            raise WorkbenchError(f"quant config: sq_alpha must be in [0, 1], got {self.sq_alpha!r}")
        if not 0.0 <= float(self.gptq_damp) < 1.0:
            raise WorkbenchError(f"quant config: gptq_damp must be in [0, 1), got {self.gptq_damp!r}")

    @property
    def enabled(self) -> bool:
        """Whether anything is quantized."""
        return self.method is not None or self.kv_cache_dtype is not None

    @property
    def needs_calibration(self) -> bool:
        """Whether the passes need activation statistics."""
        return self.method in NEEDS_CALIBRATION or self.kv_cache_dtype is not None

    def to_dict(self) -> dict:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        """Inverse of to_dict; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise WorkbenchError(f"quant config: unknown fields {extra}")
        return cls(**d)
