"""Prefill (context phase) of 2048 tokens on one GPU: the engine's `cuda` path against the measured bf16 GEMM
rate, with HF transformers' forward beside it, in one process.

    python bench/prefill.py [--models llama-3.2-1b,llama-3-8b] [--tokens 2048]

Random-weight Llama-3.2-1B and Llama-3-8B shapes in bf16, built on the GPU. The engine runs its context
phase as a session does (one sequence through the paged KV cache, logits for every token, as the graph
outputs them); HF runs `model(ids)` (sdpa attention, logits for every token too). FLOPs: 2 per
multiply-add of every linear (the logits one included) for each token, plus causal attention
(QK^T and PV over the T(T+1)/2 allowed query-key pairs). `gemm_fraction` = achieved FLOP rate / the
rate of an 8192^3 bf16 matmul measured in this run. The flash-attention plugin's block configs are
timed in the same run (`flash_configs`: whole prefill per config; `engine` is the default config), with
a breakdown of the step's kernels timed alone. Writes bench/results/prefill_h100.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from gpu_models import cuda_time_ms, device_name, engine_from_hf, gemm_rate, hf_model, linear_flops_per_token  # noqa: E402


FLASH_CANDIDATES = {64: [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 4, 2),
                         (128, 32, 4, 4)],
                    128: [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (128, 32, 4, 3)]}
# (BLOCK_M must be a multiple of BLOCK_N: an H100 run with (64, 128, 4, 2) measured a fast, wrong prefill)


def breakdown(engine, tokens: int, ex) -> dict:
    """Device time (ms) of each kind of kernel of one layer at this many tokens, timed alone; x layers."""
    import torch.nn.functional as TF

    from workbench.plugins.activation import silu_and_mul
    from workbench.plugins.flash_attention import flash_attention
    from workbench.plugins.rms_norm import add_rms_norm
    from workbench.plugins.rotary import rope_qkv

    net = engine.network
    attn = [n for n in net.nodes.values() if n.op == "attention"]
    a = attn[0].attrs
    hq, hkv, d = a["num_heads"], a["num_kv_heads"], a["head_dim"]
    hidden = net.weights["final_norm.weight"].shape[0]
    w = {k: v for k, v in net.weights.items() if k.startswith("layers.0.")}
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    qkv = torch.randn(tokens, (hq + 2 * hkv) * d, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, :hq * d].view(tokens, hq, d)
    k = qkv[:, hq * d:(hq + hkv) * d].view(tokens, hkv, d)
    v = qkv[:, (hq + hkv) * d:].view(tokens, hkv, d)
    cu = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
    gu = torch.randn(tokens, w["layers.0.mlp.gate_up.weight"].shape[0], device="cuda", dtype=torch.bfloat16)
    cos, sin = next(iter(ex.tables.values()))
    pos = torch.arange(tokens, device="cuda")
    act = silu_and_mul(gu)
    core = torch.randn(tokens, hq * d, device="cuda", dtype=torch.bfloat16)
    layer = {
        "gemm_qkv": cuda_time_ms(lambda: TF.linear(x, w["layers.0.attn.qkv.weight"])),
        "gemm_o": cuda_time_ms(lambda: TF.linear(core, w["layers.0.attn.o_proj.weight"])),
        "gemm_gate_up": cuda_time_ms(lambda: TF.linear(x, w["layers.0.mlp.gate_up.weight"])),
        "gemm_down": cuda_time_ms(lambda: TF.linear(act, w["layers.0.mlp.down.weight"])),
        "flash_attention": cuda_time_ms(lambda: flash_attention(q, k, v, cu, tokens, d ** -0.5)),
        "rope_qkv": cuda_time_ms(lambda: rope_qkv(qkv, hq, hkv, d, cos, sin, pos)),
        "add_rms_norm_x2": 2 * cuda_time_ms(lambda: add_rms_norm(x, x, net.weights["final_norm.weight"], 1e-5)),
        "silu_and_mul": cuda_time_ms(lambda: silu_and_mul(gu)),
    }
    out = {k: round(v * len(attn), 3) for k, v in layer.items()}
    logits_w = net.weights.get("logits.weight", net.weights["embed.weight"])
    out["gemm_logits"] = round(cuda_time_ms(lambda: TF.linear(x, logits_w)), 3)
    out["sum"] = round(sum(out.values()), 3)
    return out


def prefill_flops(engine, tokens: int) -> float:
    """Linear FLOPs of every token plus causal attention FLOPs."""
    attn = [n for n in engine.network.nodes.values() if n.op == "attention"]
    pairs = tokens * (tokens + 1) / 2
    attention = sum(4 * n.attrs["num_heads"] * n.attrs["head_dim"] * pairs for n in attn)
    return linear_flops_per_token(engine) * tokens + attention


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-3.2-1b,llama-3-8b")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default="prefill_h100")
    args = ap.parse_args()
    from workbench.builder.config import BuildConfig
    from workbench.plugins import flash_attention as fa
    from workbench.runtime.attention_meta import AttentionMeta
    from workbench.runtime.cuda_executor import CudaExecutor
    from workbench.runtime.kv_cache import PagedKVCache

    start = time.perf_counter()
    rate = gemm_rate()
    result = {"benchmark": "prefill", "device": device_name(), "machine": machine(), "dtype": "bfloat16",
              "tokens": args.tokens, "repeats": args.repeats, "gemm_TFLOPs": round(rate / 1e12, 1), "models": {}}
    print(f"{device_name()}: bf16 GEMM {rate / 1e12:.0f} TFLOP/s", flush=True)
    for name in args.models.split(","):
        out = result["models"].setdefault(name, {})
        try:
            hf = hf_model(name)
            engine = engine_from_hf(hf, BuildConfig(dtype="bfloat16", max_batch_size=1, max_seq_len=args.tokens,
                                                    kv_page_size=16))
            cfg = hf.config
            cache = PagedKVCache.for_budget(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim,
                                            max_tokens=args.tokens, page_size=16, dtype=torch.bfloat16, device="cuda")
            ex = CudaExecutor(engine, "cuda")
            g = torch.Generator().manual_seed(2)
            ids = torch.randint(0, cfg.vocab_size, (args.tokens,), generator=g)
            pos = torch.arange(args.tokens)
            cache.reserve(0, args.tokens)
            meta = AttentionMeta([0], [args.tokens], [0], cache)
            flops = prefill_flops(engine, args.tokens)
            ms = cuda_time_ms(lambda: ex.run(ids, pos, meta), warmup=2, repeats=args.repeats)
            logits = ex.run(ids, pos, meta)["logits"]
            out["engine"] = {"ms": round(ms, 3), "TFLOPs": round(flops / (ms / 1e3) / 1e12, 1),
                             "gemm_fraction": round(flops / (ms / 1e3) / rate, 4), "flops": flops,
                             "flash_config": list(fa.HALF_CONFIGS[64 if cfg.head_dim <= 64 else 128])}
            sweep = []
            for fc in FLASH_CANDIDATES[64 if cfg.head_dim <= 64 else 128]:
                fa.CONFIG_OVERRIDE = fc
                try:
                    t = cuda_time_ms(lambda: ex.run(ids, pos, meta), warmup=1, repeats=args.repeats)
                    sweep.append({"config": list(fc), "ms": round(t, 3), "gemm_fraction": round(flops / (t / 1e3) / rate, 4)})
                except Exception as e:  # e.g. a config out of shared memory
                    sweep.append({"config": list(fc), "error": f"{type(e).__name__}: {e}"[:200]})
                finally:
                    fa.CONFIG_OVERRIDE = None
            out["flash_configs"] = sweep
            best = min((r for r in sweep if "ms" in r), key=lambda r: r["ms"], default=None)
            if best:
                out["engine_best_flash"] = best
            out["kernels_alone_ms"] = breakdown(engine, args.tokens, ex)
            hms = cuda_time_ms(lambda: hf(ids[None].cuda()), warmup=2, repeats=args.repeats)
            hf_logits = hf(ids[None].cuda()).logits[0]
            out["hf_sdpa"] = {"ms": round(hms, 3), "TFLOPs": round(flops / (hms / 1e3) / 1e12, 1),
                              "gemm_fraction": round(flops / (hms / 1e3) / rate, 4)}
            out["engine_over_hf"] = round(hms / ms, 3)
            err = ((logits.double() - hf_logits.double()).norm() / hf_logits.double().norm()).item()
            out["logits_rel_err_vs_hf"] = round(err, 5)
            out["argmax_agreement"] = round((logits.argmax(-1) == hf_logits.argmax(-1)).float().mean().item(), 4)
            print(f"[{name}] engine {ms:.2f} ms ({out['engine']['TFLOPs']} TFLOP/s, {out['engine']['gemm_fraction']:.1%} "
                  f"of GEMM), HF {hms:.2f} ms, logits rel err vs HF {err:.2e}; flash configs "
                  f"{[(r['config'], r.get('ms')) for r in sweep]}; kernels alone {out['kernels_alone_ms']}", flush=True)
            del ex, engine, hf, logits, hf_logits, cache
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        torch.cuda.empty_cache()
    result["wall_s"] = round(time.perf_counter() - start, 1)
    path = write_result(args.name, result)
    print(f"-> {path}")
    for name, m in result["models"].items():
        e, h, b = m.get("engine", {}), m.get("hf_sdpa", {}), m.get("engine_best_flash", {})
        print(f"{name:14s} prefill {args.tokens}: engine {e.get('ms', '-')} ms = {e.get('gemm_fraction', 0):.1%} of GEMM "
              f"rate (best flash config {b.get('config')}: {b.get('gemm_fraction', 0):.1%}) | HF {h.get('ms', '-')} ms")


if __name__ == "__main__":
    main()
