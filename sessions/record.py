"""Record the sessions that CI replays (`wb replay sessions/*.wbs`).

Usage: python sessions/record.py [NAME ...]   (default: all). Re-recording is a deliberate act:
review `git diff sessions/` afterwards, as any change of expected results.
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.builder.config import BuildConfig
from workbench.engine_cache import cached_engine
from workbench.inspect.diff import DEFAULT_PROMPT, capture, compare, prepare
from workbench.inspect.replay import record
from workbench.inspect.session_file import save_session
from workbench.inspect.tiny_models import tiny_checkpoint
from workbench.inspect.tolerances import Tolerances

HERE = Path(__file__).parent
TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, initializer_range=0.2)
TOKENS = [1, 17, 42, 99, 3, 64, 7, 120, 55, 31, 8, 2]
# Tolerances keep a margin of 10x or more over what was measured, so other CPUs replay the same verdicts.
FP32 = (["1e-4"], ["1e-4"], "elementwise")

# name -> (title, model source, build config, tolerances (atol, rtol, error stat), baseline dtype, steps)
SESSIONS = {
    "tiny_llama_gqa": ("tiny Llama, GQA, fp32", {"source": "tiny", "spec": {"architecture": "LlamaForCausalLM", "seed": 0, "config": TINY}},
                       BuildConfig(max_seq_len=64), FP32, None, (0, 3)),
    "tiny_llama3_rope": ("tiny Llama 3 rope scaling, fp32", {"source": "tiny", "spec": {"architecture": "LlamaForCausalLM", "seed": 1, "config": {
        **TINY, "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8, "rope_theta": 10000.0}}}},
        BuildConfig(max_seq_len=64), FP32, None, (0, 3)),
    "tiny_mistral_window": ("tiny Mistral, sliding window 4, fp32", {"source": "tiny", "spec": {"architecture": "MistralForCausalLM", "seed": 2, "config": {**TINY, "sliding_window": 4}}},
                            BuildConfig(max_seq_len=64), FP32, None, (0, 3)),
    "tiny_qwen2_bias": ("tiny Qwen2, qkv bias, tied, fp32", {"source": "tiny", "spec": {"architecture": "Qwen2ForCausalLM", "seed": 3, "config": {**TINY, "tie_word_embeddings": True}}},
                        BuildConfig(max_seq_len=64), FP32, None, (0, 3)),
    "smollm2_fp32": ("SmolLM2-135M-Instruct, fp32 vs HF fp32", {"source": "default"}, BuildConfig(max_seq_len=256),
                     (["1e-3"], ["1e-3"], "elementwise"), None, (0, 2)),
    "smollm2_bf16": ("SmolLM2-135M-Instruct, bf16 engine vs HF fp32: error growing through the layers", {"source": "default"},
                     BuildConfig(dtype="bf16", max_seq_len=256), (["1e-3"], ["0.1"], "median"), "float32", (0,)),
}


def record_one(name: str) -> Path:
    """Run the diff of one session spec and save it as sessions/NAME.wbs."""
    title, model, build, (atol, rtol, stat), baseline_dtype, steps = SESSIONS[name]
    if model["source"] == "tiny":
        checkpoint, token_ids, prompt = tiny_checkpoint(model["spec"]), TOKENS, None
    else:
        from workbench.default_model import default_checkpoint

        checkpoint, token_ids, prompt = default_checkpoint(), None, DEFAULT_PROMPT
    engine = cached_engine(checkpoint, build)
    tol = Tolerances.parse(atol, rtol, error_stat=stat)
    names, ids, baseline = prepare(engine, "all", prompt=prompt, token_ids=token_ids, tolerances=tol, baseline=None,
                                   baseline_dtype=baseline_dtype, device="cpu")
    modes = ("accumulated", "local")
    run = capture(engine, names, token_ids=ids, modes=modes, steps=steps, baseline=baseline, prompt=prompt)
    reports = [compare(run, s, m, tol) for s in steps for m in modes]
    session = record(engine, reports, model=model, title=title)
    path = save_session(session, HERE / f"{name}.wbs")
    fails = {f"{r.mode}/{r.step}": len(r.failures) for r in reports}
    print(f"{path.name}: {len(names)} names, failures recorded as expected: {fails}")
    return path


if __name__ == "__main__":
    for n in sys.argv[1:] or list(SESSIONS):
        record_one(n)
