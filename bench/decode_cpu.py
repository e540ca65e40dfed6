"""SmolLM2-135M fp32 decode on the CPU: the engine and HF eager `generate`, side by side in one process.

Usage: python bench/decode_cpu.py [--new-tokens 64] [--repeats 3] [--threads N]
Writes bench/results/decode_cpu.json. Run on an otherwise idle machine: the two share the cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median, write_result  # noqa: E402

from workbench.cli.common import resolve_engine  # noqa: E402
from workbench.runtime.session import GenerationConfig, GenerationSession  # noqa: E402
from workbench.tokenizer import chat_prompt, load_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    engine = resolve_engine(None, "fp32")
    tokenizer = load_tokenizer(engine)
    hf = AutoModelForCausalLM.from_pretrained(engine.source["checkpoint"], dtype=torch.float32,
                                              attn_implementation="eager").eval()
    prompt = chat_prompt(tokenizer, "Tell me a long story about a lighthouse keeper and a storm.")
    n = args.new_tokens
    session = GenerationSession(engine)  # no detokenising per token: HF generate does none either
    ids = torch.tensor([prompt])

    def run_engine(k: int) -> tuple[float, list[int]]:
        t = time.perf_counter()
        r = session.generate([prompt], GenerationConfig(max_new_tokens=k, eos_token_ids=[]))
        return time.perf_counter() - t, r.token_ids[0]

    @torch.inference_mode()
    def run_hf(k: int) -> tuple[float, list[int]]:
        t = time.perf_counter()
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k, do_sample=False)
        return time.perf_counter() - t, out[0, len(prompt):].tolist()

    run_engine(4), run_hf(4)  # warm-up
    rows = {"engine": {"first": [], "full": []}, "hf_eager": {"first": [], "full": []}}
    same = True
    for _ in range(args.repeats):  # interleaved so both see the same machine state
        for name, fn in (("engine", run_engine), ("hf_eager", run_hf)):
            rows[name]["first"].append(fn(1)[0])
            t, toks = fn(n)
            rows[name]["full"].append(t)
            rows[name].setdefault("tokens", toks)
        same &= rows["engine"]["tokens"] == rows["hf_eager"]["tokens"]
    result = {"benchmark": "decode_cpu", "model": "SmolLM2-135M-Instruct", "dtype": "float32", "batch": 1,
              "prompt_tokens": len(prompt), "new_tokens": n, "repeats": args.repeats, "machine": machine(),
              "identical_tokens": same}
    for name, r in rows.items():
        first, full = median(r["first"]), median(r["full"])
        result[name] = {"time_to_first_token_s": round(first, 4), "total_s": round(full, 4),
                        "decode_tokens_per_s": round((n - 1) / (full - first), 2)}
    result["engine_over_hf_decode"] = round(result["engine"]["decode_tokens_per_s"] / result["hf_eager"]["decode_tokens_per_s"], 3)
    path = write_result("decode_cpu", result)
    print(f"engine {result['engine']['decode_tokens_per_s']} tok/s, HF eager {result['hf_eager']['decode_tokens_per_s']} "
          f"tok/s, ratio {result['engine_over_hf_decode']}x, identical tokens: {same} -> {path}")


if __name__ == "__main__":
    main()
