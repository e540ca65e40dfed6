"""fp16 and bf16 engines against HF transformers run in the same dtype.

The HF reference is the checkpoint loaded with `from_pretrained(dtype=...)`, as users load it. (HF's
`model.to(dtype)` would also round the RoPE `inv_freq` buffer to that dtype, which from_pretrained and
the engine keep in float32; that one quirk makes `.to()` differ from both by about as much as bf16 differs
from fp32.) On CPU the engine reproduces HF bit for bit; the bounds leave room for other kernels
(GPU GEMMs, other batch shapes) while staying at least twice below the dtype's own error against fp32,
so a real numerics difference would still fail.
"""

import pytest
import torch
import transformers

from tests.conftest import hf_logits
from workbench.builder.build import build
from workbench.builder.config import BuildConfig
from workbench.runtime.executor import Executor

# dtype -> bound on max |engine - HF same dtype| / max |HF fp32|; what HF in that dtype is off from fp32 on
# these models is ~4e-3 (fp16) and 2.5e-2..5e-2 (bf16).
BOUND = {"fp16": 1e-3, "bf16": 8e-3}
TORCH = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _worst(actual, expected, scale):
    return max(((a.double() - e.double()).abs().max() / s.double().abs().max()).item()
               for a, e, s in zip(actual, expected, scale))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("name", ["llama_gqa", "llama3_rope", "mistral_window", "qwen2_bias"])
def test_half_precision_matches_hf_same_dtype(name, dtype, hf_checkpoint, prompts):
    path, model32 = hf_checkpoint(name)
    ref32 = hf_logits(model32, prompts)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=TORCH[dtype], attn_implementation="eager")
    ref = hf_logits(hf.eval(), prompts)
    engine = build(path, BuildConfig(dtype=dtype))
    outs = [o["logits"] for o in Executor(engine).forward(prompts)]
    assert all(o.dtype == TORCH[dtype] for o in outs)
    err = _worst(outs, ref, ref32)
    dtype_err = _worst(ref, ref32, ref32)  # how far the dtype itself moves HF from fp32
    assert err <= BOUND[dtype], f"{name} {dtype}: engine vs HF {dtype} {err:.2e} (HF {dtype} vs fp32 {dtype_err:.2e})"
    assert dtype_err >= 2 * BOUND[dtype], f"{dtype_err:.2e}: the dtype barely matters here, so the check means little"
