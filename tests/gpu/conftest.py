"""The GPU tests of the inspect commands reuse the diff fixtures: a tiny Llama checkpoint with a tokenizer, its engines."""

from tests.inspect.conftest import baseline_fp32, engine_bf16, engine_fp32, tiny_ckpt  # noqa: F401
