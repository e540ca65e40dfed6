"""The CLI tests reuse the diff fixtures: a tiny Llama checkpoint with a tokenizer, its engine, planted faults."""

from tests.inspect.conftest import engine_fp32, planted, tiny_ckpt  # noqa: F401
