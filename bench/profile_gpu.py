"""`wb profile` on the GPU for a Llama-3.2-1B-shaped model with random weights; trace and summary to $OUT.

    python bench/profile_gpu.py                      # bf16 on cuda, writes to $OUT or bench/results/
    python bench/profile_gpu.py --tiny --device cpu  # the same code path on a tiny model (tests use this)

Shape: hidden 2048, 16 layers, 32 heads of 64, 8 KV heads, intermediate 8192, vocab 128256,
tied embeddings, llama3 RoPE scaling. The HF checkpoint is made from LlamaConfig with
weights drawn on the target device (no download), saved, built into an engine by the
real builder, then profiled through the `wb profile` command with the HF baseline.

Writes profile_gpu_trace.json (Perfetto / chrome://tracing), profile_gpu_report.json
(ProfileReport) and profile_gpu_summary.txt (what the command printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LLAMA_3_2_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                    intermediate_size=8192, vocab_size=128256, head_dim=64, max_position_embeddings=131072,
                    rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192})
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=256, max_position_embeddings=256, tie_word_embeddings=True)


def make_checkpoint(path: Path, shape: dict, dtype: torch.dtype, device: str) -> Path:
    """A random-weight HF Llama checkpoint: modules made on the meta device, weights drawn on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    model.tie_weights()  # to_empty gives lm_head its own tensor; tie it to the embeddings again
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # (buffers such as RoPE's inv_freq are not saved)
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    model.save_pretrained(path)
    del model
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="A tiny model in fp32 (checks the code path on any machine).")
    ap.add_argument("--out", type=Path, default=None, help="Output folder [default: $OUT, else bench/results].")
    ap.add_argument("--work", type=Path, default=None, help="Where the checkpoint goes [default: a temp folder].")
    ap.add_argument("--prompt-len", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; use --device cpu --tiny to check the code path")
    out = args.out or Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    shape, dtype = (TINY, "fp32") if args.tiny else (LLAMA_3_2_1B, "bf16")
    prompt_len = args.prompt_len or (16 if args.tiny else 512)
    steps = args.steps or (4 if args.tiny else 32)

    from click.testing import CliRunner

    from workbench.builder.config import canonical_dtype
    from workbench.builder.network import torch_dtype
    from workbench.cli import main as wb
    from workbench.cli.profile_cmd import render
    from workbench.inspect.profiler import ProfileReport, write_text_atomic
    from workbench.inspect.timeline import summarize_profile

    work = Path(args.work or tempfile.mkdtemp(prefix="wb-profile-gpu-"))
    os.environ.setdefault("WB_CACHE", str(work / "cache"))
    t0 = time.perf_counter()
    ckpt = make_checkpoint(work / ("tiny" if args.tiny else "llama-3.2-1b-shaped"), shape,
                           torch_dtype(canonical_dtype(dtype)), args.device)
    print(f"checkpoint {ckpt} in {time.perf_counter() - t0:.1f}s", flush=True)
    trace, report_path = out / "profile_gpu_trace.json", out / "profile_gpu_report.json"
    cmd = ["profile", str(ckpt), "--dtype", dtype, "--device", args.device, "--prompt-len", str(prompt_len),
           "--steps", str(steps), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--trace", str(trace), "--json", str(report_path)]
    print("wb " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    result = CliRunner().invoke(wb, cmd)
    print(result.output)
    if result.exit_code != 0:
        if result.exc_info and not isinstance(result.exception, SystemExit):
            raise result.exception
        sys.exit(result.exit_code)
    print(f"wb profile took {time.perf_counter() - t0:.1f}s (engine build included)")
    from rich.console import Console

    console = Console(record=True, width=120, file=open(os.devnull, "w"))
    console.print("wb " + " ".join(cmd[:1] + ["<checkpoint>"] + cmd[2:]))
    render(summarize_profile(ProfileReport.load(report_path), top=12), to=console)
    summary = write_text_atomic(out / "profile_gpu_summary.txt", console.export_text())
    for f in (trace, report_path, summary):
        print(f"wrote {f}")


if __name__ == "__main__":
    main()
