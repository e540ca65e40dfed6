"""BuildConfig: what the builder is asked to produce."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from workbench.builder.quantization.config import QuantConfig
from workbench.errors import WorkbenchError

DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "half": "float16",
                 "bf16": "bfloat16", "bfloat16": "bfloat16"}


def canonical_dtype(name: str) -> str:
    """`bf16` -> `bfloat16`; unknown names get a one-line error listing the choices."""
    try:
        return DTYPE_ALIASES[str(name).lower()]
    except KeyError:
        raise WorkbenchError(f"unknown dtype {name!r}; choose one of fp32, fp16, bf16") from None


@dataclass
class BuildConfig:
    """dtype, runtime limits (batch, sequence, KV page) and the names marked as extra outputs."""

    dtype: str = "float32"
    max_batch_size: int = 8
    max_seq_len: int = 2048
    kv_page_size: int = 16
    marked: list[str] = field(default_factory=list)
    quant: QuantConfig | None = None  # weight quantization and/or quantized KV cache; None: none

    def __post_init__(self):
        self.dtype = canonical_dtype(self.dtype)
        if isinstance(self.quant, dict):
            self.quant = QuantConfig.from_dict(self.quant)
        for key in ("max_batch_size", "max_seq_len", "kv_page_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise WorkbenchError(f"build config: {key} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BuildConfig":
        """Inverse of to_dict."""
        return cls(**d)
