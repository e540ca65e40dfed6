"""Shared by the GPU benchmarks: random-weight Llama shapes built on the device, the engine built from
the same weights, and the device's two ceilings (copy bandwidth, bf16 GEMM rate) measured in-process."""

from __future__ import annotations

import statistics
import time

import torch

# Llama-3.2-1B and Llama-3-8B shapes (config.json of the real models; weights random)
SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, vocab_size=128256, head_dim=64, tie_word_embeddings=True,
                         max_position_embeddings=131072,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192}),
    "llama-3-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=128256, head_dim=128, tie_word_embeddings=False,
                       max_position_embeddings=8192,
                       rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
}
COMMON = dict(rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001)


def hf_model(name: str, device: str = "cuda", dtype=torch.bfloat16, attn: str = "sdpa", seed: int = 0):
    """The HF LlamaForCausalLM of a shape, weights drawn on the device (HF's std 0.02, norms 1)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[name], **COMMON)
    config._attn_implementation = attn
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    model.tie_weights()
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for m in model.modules():  # RoPE buffers: left empty by to_empty, then cast by .to(); as from_pretrained: fp32
        if hasattr(m, "original_inv_freq") and hasattr(m, "rope_type"):
            fn = m.compute_default_rope_parameters if m.rope_type == "default" else ROPE_INIT_FUNCTIONS[m.rope_type]
            inv_freq, m.attention_scaling = fn(m.config)
            m.inv_freq = inv_freq.to(device)
            m.original_inv_freq = inv_freq.clone().to(device)
    return model.eval()


def engine_from_hf(hf, build_config):
    """An in-memory engine over the same weights (q,k,v and gate,up fused: those two are copies)."""
    from workbench.builder.build import run_passes
    from workbench.builder.engine import Engine
    from workbench.builder.models.llama import LlamaConfig, LlamaForCausalLM, hf_state_to_engine

    cfg = LlamaConfig.from_hf(hf.config.to_dict())
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.load_state_dict(hf_state_to_engine(cfg, dict(hf.state_dict()), "random weights"))
    net = run_passes(model.to_network(build_config.dtype), build_config)
    return Engine(network=net, architecture=cfg.architecture, model_config=cfg.to_dict(), build_config=build_config,
                  source={"checkpoint": "random weights"})


def decode_setup(name: str, prompt: int, new_tokens: int):
    """(bf16 engine at batch 1, a paged cache for it, a random prompt of `prompt` tokens, the HF config) for decode
    probes over one model's random-weight shapes; the HF model itself is freed."""
    from workbench.builder.config import BuildConfig
    from workbench.runtime.kv_cache import PagedKVCache

    hf = hf_model(name)
    bc = BuildConfig(dtype="bfloat16", max_batch_size=1, max_seq_len=prompt + new_tokens + 16, kv_page_size=16)
    engine = engine_from_hf(hf, bc)
    cfg = hf.config
    del hf
    torch.cuda.empty_cache()
    cache = PagedKVCache.for_budget(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim,
                                    max_tokens=bc.max_seq_len + 64, page_size=16, dtype=torch.bfloat16, device="cuda")
    ids = torch.randint(0, engine.model_config["vocab_size"], (prompt,), generator=torch.Generator().manual_seed(1))
    return engine, cache, ids.tolist(), cfg


def cuda_time_ms(fn, warmup: int = 2, repeats: int = 5) -> float:
    """Median device time of fn() over repeats, by CUDA events, after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def wall_s(fn, repeats: int = 3) -> list[float]:
    """Wall-clock seconds of fn() (synchronized), each repeat."""
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written (1 GiB buffers)."""
    n = 1 << 29  # bf16 elements: 1 GiB
    src = torch.randn(n // 2, device="cuda").view(torch.bfloat16)
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), warmup=3, repeats=10)
    return 2 * src.numel() * src.element_size() / (ms / 1e3)


def gemm_rate(n: int = 8192) -> float:
    """bf16 matrix product rate in FLOP/s (n x n x n, random data, rotating three input pairs)."""
    pairs = [(torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16))
             for _ in range(3)]
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    i = [0]

    def step():
        a, b = pairs[i[0] % 3]
        i[0] += 1
        torch.matmul(a, b, out=out)

    ms = cuda_time_ms(step, warmup=3, repeats=15)
    del pairs, out
    return 2 * n ** 3 / (ms / 1e3)


def weight_bytes(engine) -> dict:
    """Bytes of the weights a step reads: every linear's weight (the logits one too; a quantized one's stored
    operands) and the norms; the
    embedding table is only gathered (one row per token), so it counts per token, not whole."""
    net = engine.network
    linear, norms = 0, 0
    for node in net.nodes.values():
        if node.op in ("linear", "quant_linear"):  # quantized: qweight, scales, zeros, ... as stored
            for i in node.inputs[1:]:
                w = net.weights[i]
                linear += w.numel() * w.element_size()
        elif node.op == "rms_norm":
            w = net.weights[node.inputs[1]]
            norms += w.numel() * w.element_size()
    emb = net.weights["embed.weight"]
    return {"linear": linear, "norms": norms, "embedding_row": emb.shape[1] * emb.element_size()}


def linear_flops_per_token(engine) -> int:
    """2 x (multiply-adds of every linear) for one token."""
    net = engine.network
    return sum(2 * net.weights[n.inputs[1]].numel() for n in net.nodes.values() if n.op == "linear")


def device_name() -> str:
    """The GPU's name."""
    return torch.cuda.get_device_name()


def sweep_table(paths: str) -> tuple[dict | None, str]:
    """The GEMV table of bench/gemv_sweep.py JSON files (a comma list, later ones overriding earlier ones; `builtin`
    is the built-in table) and where it came from; (None, "built-in ...") when none is there."""
    import json
    from pathlib import Path

    from workbench.runtime.gemv_policy import GemvPolicy

    table, used = {}, []
    for path in map(Path, filter(None, paths.split(","))):
        if str(path) == "builtin":  # the built-in table, for a sweep of some shapes to override
            from workbench.runtime.gemv_policy import H100_GEMV

            table.update(H100_GEMV)
            used.append("built-in H100_GEMV")
        elif path.is_file() and "table" in json.loads(path.read_text()):
            table.update(GemvPolicy.table_from_sweep(json.loads(path.read_text())["table"]))
            used.append(path.name)
    return (table, ", ".join(used)) if used else (None, "built-in H100_GEMV")
