"""Quantization quality on SmolLM2-135M-Instruct (CPU): perplexity on a fixed public-domain text
(bench/data/pride_and_prejudice_ch1-3.txt) and top-1 agreement / KL with the fp32 engine, for
every quantization mode, through the torch reference kernels.

Usage: WB_CACHE=/tmp/wbcache python bench/quant_quality.py [--window 512] [--windows 3] [--modes a,b,...]
Writes bench/results/quant_quality_cpu.json and .md (--checkpoint and --out run it on another model,
as tests/bench/test_quant_quality_script.py does on a tiny one).

The network is built once in fp32 and calibrated once (on the built-in calibration text,
which is not the evaluation text); every mode then runs the same quantization passes that
`wb build --quant MODE` runs, on the same calibration statistics (sequential GPTQ runs the
same calibration tokens again, quantizing layer after layer). The "one-pass Hessians" and
"no clipping" rows are `--no-gptq-sequential` and `--no-awq-clip`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, write_result  # noqa: E402

from workbench.builder.build import build  # noqa: E402
from workbench.builder.config import BuildConfig  # noqa: E402
from workbench.builder.engine import Engine  # noqa: E402
from workbench.builder.quantization import QuantConfig, apply_quantization, calibrate_network  # noqa: E402
from workbench.builder.quantization.calibration import calibration_ids  # noqa: E402
from workbench.builder.quantization.config import DEFAULT_TARGETS  # noqa: E402
from workbench.builder.quantization.rewrite import select_targets  # noqa: E402
from workbench.builder.quantization.summary import summarize_quantization  # noqa: E402
from workbench.runtime.executor import Executor  # noqa: E402

TEXT = Path(__file__).parent / "data" / "pride_and_prejudice_ch1-3.txt"
MODES = {
    "fp32": {},
    "int8_wo": {"method": "int8_wo"},
    "int8_wo (logits layer too)": {"method": "int8_wo", "targets": DEFAULT_TARGETS + ["logits"]},
    "int4_wo (RTN, g128)": {"method": "int4_wo"},
    "gptq (g128)": {"method": "gptq"},
    "gptq (g128, act-order)": {"method": "gptq", "act_order": True},
    "gptq (g128, one-pass Hessians)": {"method": "gptq", "gptq_sequential": False},
    "gptq (g128, act-order, one-pass Hessians)": {"method": "gptq", "act_order": True, "gptq_sequential": False},
    "awq (g128)": {"method": "awq"},
    "awq (g128, no clipping)": {"method": "awq", "awq_clip": False},
    "smoothquant (a0.5, per-channel W, per-token A)": {"method": "smoothquant"},
    "smoothquant (a0.5, per-tensor W, static A)": {"method": "smoothquant", "sq_weights": "per_tensor", "sq_acts": "per_tensor"},
    "fp8 (per-tensor)": {"method": "fp8"},
    "kv cache int8 (per head)": {"kv_cache_dtype": "int8"},
    "kv cache fp8 (per head)": {"kv_cache_dtype": "fp8"},
}


def split_modes(text: str) -> list[str]:
    """`a,b (x, y),c` -> the mode names: commas inside parentheses belong to the name."""
    names, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            names.append(current.strip())
            current = ""
        else:
            current += ch
    names.append(current.strip())
    unknown = [n for n in names if n and n not in MODES]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; choose from {list(MODES)}")
    return [n for n in names if n]


def evaluate(net, windows: list[list[int]], ref: list[torch.Tensor] | None):
    """(perplexity, top-1 agreement, mean KL vs ref, log-probs per window)."""
    engine = Engine(network=net, architecture="", model_config={}, build_config=BuildConfig(dtype=net.dtype))
    ex = Executor(engine)
    nll, n, agree, kl, logps = 0.0, 0, 0.0, 0.0, []
    for i, w in enumerate(windows):
        logits = ex.forward([w])[0]["logits"][:-1].to(torch.float32)  # predicts tokens 1..L-1
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(w[1:])
        nll += float(-logp.gather(1, target[:, None]).sum())
        n += len(target)
        if ref is not None:
            agree += float((logp.argmax(-1) == ref[i].argmax(-1)).sum())
            kl += float((ref[i].exp() * (ref[i] - logp)).sum())
        logps.append(logp)
    return math.exp(nll / n), (agree / n if ref is not None else 1.0), (kl / n if ref is not None else 0.0), logps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--window", type=int, default=512, help="tokens per evaluation window")
    ap.add_argument("--windows", type=int, default=3, help="number of consecutive windows of the text")
    ap.add_argument("--modes", default=None, help="comma-separated subset of the mode names (fp32 always runs)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the quantization loops are many small ops)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="HF checkpoint dir (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tokenizers import Tokenizer

    from workbench.default_model import default_checkpoint

    t_start = time.perf_counter()
    ckpt = args.checkpoint or default_checkpoint()
    ids = Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(TEXT.read_text()).ids
    windows = [ids[i * args.window:(i + 1) * args.window] for i in range(min(args.windows, len(ids) // args.window))]
    fp = build(ckpt, BuildConfig(dtype="fp32"))
    net = fp.network
    base = QuantConfig()
    targets = select_targets(net, base.targets, base.exclude)
    calib_ids, calib_source = calibration_ids(base, ckpt, fp.model_config["vocab_size"])
    t = time.perf_counter()
    calib = calibrate_network(net, QuantConfig(method="gptq", kv_cache_dtype="int8"), calib_ids, targets,
                              source=calib_source, all_stats=True)
    calib_s = time.perf_counter() - t

    chosen = list(MODES) if not args.modes else ["fp32"] + [m for m in split_modes(args.modes) if m != "fp32"]
    rows, ref = [], None
    for name in chosen:
        t = time.perf_counter()
        config = QuantConfig(**MODES[name])
        mode_targets = select_targets(net, config.targets, config.exclude) if "targets" in MODES[name] else targets
        q = apply_quantization(net, config, calib, mode_targets) if MODES[name] else net
        quant_s = time.perf_counter() - t
        t = time.perf_counter()
        ppl, agree, kl, logps = evaluate(q, windows, ref)
        eval_s = time.perf_counter() - t
        if ref is None:
            ref = logps
        s = summarize_quantization(q)
        linear_bytes = sum(w.numel() * w.element_size() for k, w in q.weights.items() if k.rsplit(".", 1)[0] in targets)
        rows.append({"mode": name, "config": MODES[name], "perplexity": ppl, "top1_agreement": agree, "kl_vs_fp32": kl,
                     "weight_mib": s.weight_bytes / 2**20, "decoder_linear_mib": linear_bytes / 2**20,
                     "quantize_s": quant_s, "eval_s": eval_s})
        print(f"{name:48s} ppl {ppl:8.3f}  top-1 {agree:6.1%}  KL {kl:.4f}  {linear_bytes / 2**20:6.1f} MiB  "
              f"quantize {quant_s:5.1f}s  eval {eval_s:5.1f}s", flush=True)
    fp_ppl = rows[0]["perplexity"]
    for r in rows:
        r["perplexity_delta_pct"] = 100.0 * (r["perplexity"] / fp_ppl - 1.0)
    data = {
        "model": ckpt.name, "engine_dtype": "float32", "backend": "torch (CPU reference kernels)",
        "text": str(TEXT.relative_to(Path(__file__).parent)), "eval_tokens": sum(len(w) - 1 for w in windows),
        "window": args.window, "windows": len(windows),
        "calibration": {"source": calib_source, "tokens": calib.tokens, "seconds": calib_s},
        "quantized_layers": len(targets), "rows": rows, "total_s": time.perf_counter() - t_start, "machine": machine(),
        "command": "WB_CACHE=/tmp/wbcache python bench/quant_quality.py " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "quant_quality_cpu.json"
    if args.out == RESULTS:
        write_result("quant_quality_cpu", data)
    else:
        path.write_text(json.dumps(data, indent=2))
    (args.out / "quant_quality_cpu.md").write_text(markdown(data))
    print(f"wrote {path} and quant_quality_cpu.md in {data['total_s']:.0f}s")


def markdown(data: dict) -> str:
    """The results as a Markdown table."""
    lines = [f"# Quantization quality: {data['model']} ({data['backend']})", "",
             f"Perplexity on `bench/{data['text']}` ({data['eval_tokens']} predicted tokens, {data['windows']} windows of "
             f"{data['window']}), top-1 agreement and mean KL(fp32 || mode) per token against the fp32 engine. "
             f"{data['quantized_layers']} decoder linears quantized (embeddings, norms and the tied LM head stay fp32, "
             "except in the row marked logits layer too: `--quant-logits`). "
             f"Calibration: {data['calibration']['source']}. GPTQ calibrates sequentially (each linear on the "
             "outputs of the already-quantized earlier ones) and AWQ clips after scaling, except in the rows "
             "marked one-pass Hessians (`--no-gptq-sequential`) and no clipping (`--no-awq-clip`).", "",
             "| mode | perplexity | vs fp32 | top-1 agreement | KL (nats) | decoder linears MiB | all weights MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['mode']} | {r['perplexity']:.3f} | {r['perplexity_delta_pct']:+.2f}% | "
                     f"{r['top1_agreement']:.1%} | {r['kl_vs_fp32']:.4f} | {r['decoder_linear_mib']:.1f} | "
                     f"{r['weight_mib']:.1f} |")
    lines += ["", f"Command: `{data['command']}` ({data['total_s']:.0f} s on {data['machine']['cpu']}, "
              f"{data['machine']['cores']} cores, torch {data['machine']['torch']}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
