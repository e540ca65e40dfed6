"""Triton kernels registered as plugins, each with a plain-torch reference next to it.

`PLUGINS` names every kernel entry point and its reference; the `cuda` backend swaps them
in for graph ops (`runtime.cuda_ops`, `runtime.cuda_program`), and tests/plugins compares
each one with its reference (on the CPU through TRITON_INTERPRET=1 at small sizes, on the
GPU at full sizes in tests/gpu). Modules import Triton, so import them only where the fast
path is used: this file imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Plugin:
    """A kernel and its reference, by module and function name."""

    name: str
    module: str
    kernel: str
    reference: str
    replaces: str  # the graph op (or op pattern) it implements

    def load(self):
        """(kernel function, reference function)."""
        mod = importlib.import_module(f"workbench.plugins.{self.module}")
        return getattr(mod, self.kernel), getattr(mod, self.reference)


PLUGINS = {p.name: p for p in [
    Plugin("flash_attention", "flash_attention", "flash_attention", "flash_attention_ref",
           "attention (context phase: packed sequences, causal, GQA, sliding window)"),
    Plugin("paged_decode_attention", "paged_attention", "paged_decode_attention", "paged_decode_attention_ref",
           "attention (generation phase: one query per sequence over the paged KV cache)"),
    Plugin("paged_decode_attention_rope", "paged_attention", "paged_decode_attention_rope",
           "paged_decode_attention_rope_ref", "split qkv -> rope(q), rope(k) -> KV cache write -> attention "
           "(generation phase)"),
    Plugin("write_kv", "paged_attention", "write_kv", "write_kv_ref", "the KV cache write of attention"),
    Plugin("add_rms_norm", "rms_norm", "add_rms_norm", "add_rms_norm_ref", "add -> rms_norm (residual + norm)"),
    Plugin("rms_norm", "rms_norm", "rms_norm", "rms_norm_ref", "rms_norm"),
    Plugin("rope", "rotary", "rope", "rope_ref", "rope"),
    Plugin("rope_qkv", "rotary", "rope_qkv", "rope_qkv_ref", "split qkv -> rope(q), rope(k) -> KV cache write"),
    Plugin("silu_and_mul", "activation", "silu_and_mul", "silu_and_mul_ref", "split gate_up -> silu(gate) * up"),
    Plugin("gemv", "gemv", "gemv", "gemv_ref", "linear with few rows (decode), instead of cuBLAS where faster; "
           "with swiglu, gate_up linear -> silu(gate) * up"),
    Plugin("w8a16_gemv", "gemv", "w8a16_gemv", "w8a16_gemv_ref", "int8 weight-only quant_linear with few rows"),
    Plugin("w4a16_gemv", "gemv", "w4a16_gemv", "w4a16_gemv_ref", "int4 weight-only quant_linear with few rows"),
    Plugin("quant_linear", "quant_gemm", "quant_linear", "quant_linear_ref",
           "quant_linear: weight-only GEMMs (Triton), W8A8 (torch._int_mm), FP8 (torch._scaled_mm)"),
    Plugin("decode_block", "decode_block", "decode_block", "decode_block_ref",
           "o_proj -> add + rms_norm -> gate_up, silu(gate) * up -> down -> add + rms_norm -> the next projection, "
           "one row (Hopper, Gluon; not used by the engines yet)"),
    Plugin("decode_prologue", "decode_step", "decode_prologue", "decode_prologue_ref",
           "the decode step's inputs from one staging tensor (ids, positions, lengths, KV slots)"),
    Plugin("decode_advance", "decode_step", "decode_advance", "decode_advance_ref",
           "feeds the greedy token back as the next step's input, on the device"),
    Plugin("greedy_advance", "decode_step", "greedy_advance", "greedy_advance_ref",
           "argmax of the step's logits, then decode_advance (the captured greedy step)"),
]}
