"""Would one persistent kernel beat the decode step's chain of GEMV launches? A probe for that question, not an
engine path: every layer's four projections (qkv, o, gate_up with its activation, down) for a Llama shape in bf16,
one row, each output feeding the next projection (qkv's first H values stand in for attention, down feeds the next
layer's qkv; no norms, no attention), timed two ways in one process:

- `launches`: the plugin's GEMVs (plugins/gemv.py) with the built-in table's configs, captured in one CUDA graph
  with programmatic dependent launch, as the engine's decode step runs them;
- `persistent`: one kernel of PROGRAMS programs (a few an SM, all resident), every stage's row tiles dealt to the
  programs in turn, weights in TMA tiles pipelined over STAGES buffers, and a device-wide barrier between stages
  (an atomic counter each: release on arrival, acquire while spinning).

    python bench/persistent_probe.py                        # Llama-3.2-1B and Llama-3-8B shapes
    python bench/persistent_probe.py --models 1b --programs 1,2,4

Both read the same weights once a step. Reports each way's time, its read rate, and the ratio. The barriers spin a
bounded number of times; a run that hits the bound is reported as such (its programs were not all resident), not
timed. Writes bench/results/persistent_probe_h100.json (and $OUT/ when set). On the CPU (TRITON_INTERPRET=1) `--tiny`
runs small shapes with one program, to check the kernel's arithmetic against the launches'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402

from workbench.plugins import gemv as gm  # noqa: E402  (first: it sets up the interpreter where there is no GPU)
from workbench.plugins.common import interpreting  # noqa: E402

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# BLOCK_N, BLOCK_K, stages, warps, barriers (without: the weights' streaming alone, results wrong)
CONFIGS = [(8, 256, 4, 4, True), (16, 256, 4, 4, True), (8, 256, 6, 4, True), (16, 256, 6, 4, True),
           (32, 256, 4, 8, True), (16, 256, 4, 4, False), (16, 256, 6, 4, False), (32, 256, 4, 8, False)]
SHAPES = {"1b": dict(layers=16, h=2048, qkv=3072, i=8192), "8b": dict(layers=32, h=4096, qkv=6144, i=14336),
          "tiny": dict(layers=2, h=256, qkv=384, i=512)}


@triton.jit
def _barrier(CNT, idx, G):
    """Every program arrives at counter idx (release), then polls it (acquire) until all G have: the stage's outputs
    are then visible to every program. Polls at most 2^16 times (tens of milliseconds); a program that gives up counts in CNT[0]."""
    tl.debug_barrier()
    tl.atomic_add(CNT + idx, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
    spins = 0
    while (seen < G) & (spins < 65536):
        seen = tl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
        spins += 1
    if seen < G:
        tl.atomic_add(CNT, 1, sem="relaxed", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _stage(Wd, row0, up0, N, K, X, Y, BN: tl.constexpr, BK: tl.constexpr, STAGES: tl.constexpr,
           SWIGLU: tl.constexpr):
    """This program's row tiles of y = x @ W[row0:row0 + N]^T (SWIGLU: silu(gate) * up, the up rows at up0); x is
    read from L2 (.cg: another SM wrote it)."""
    for t in range(tl.program_id(0), N // BN, tl.num_programs(0)):
        acc = tl.zeros([BN, BK], tl.float32)
        accu = tl.zeros([BN, BK], tl.float32)
        for k0 in tl.range(0, K, BK, num_stages=STAGES):
            x = tl.load(X + k0 + tl.arange(0, BK), cache_modifier=".cg").to(tl.float32)[None, :]
            acc += Wd.load([row0 + t * BN, k0]).to(tl.float32) * x
            if SWIGLU:
                accu += Wd.load([up0 + t * BN, k0]).to(tl.float32) * x
        y = tl.sum(acc, axis=1)
        if SWIGLU:
            g = y.to(tl.bfloat16).to(tl.float32)
            y = (g / (1.0 + tl.exp(-g))).to(tl.bfloat16).to(tl.float32) * tl.sum(accu, axis=1).to(tl.bfloat16)
        tl.store(Y + t * BN + tl.arange(0, BN), y.to(tl.bfloat16))


@triton.jit
def _chain(Wqkv, Wo, Wgu, Wdn, A, B, C, D, CNT, L, H: tl.constexpr, QKV: tl.constexpr, I: tl.constexpr,
           BN: tl.constexpr, BK: tl.constexpr, STAGES: tl.constexpr, SYNC: tl.constexpr):
    """All layers' projections in one launch: A -> qkv -> B; B[:H] -> o -> C; C -> gate_up, swiglu -> D; D -> down
    -> A, a barrier after each (without SYNC none: wrong results, the time of the weights' streaming alone)."""
    G = tl.num_programs(0)
    for layer in range(L):
        _stage(Wqkv, layer * QKV, 0, QKV, H, A, B, BN, BK, STAGES, False)
        if SYNC:
            _barrier(CNT, 4 * layer + 1, G)
        _stage(Wo, layer * H, 0, H, H, B, C, BN, BK, STAGES, False)
        if SYNC:
            _barrier(CNT, 4 * layer + 2, G)
        _stage(Wgu, layer * 2 * I, layer * 2 * I + I, I, H, C, D, BN, BK, STAGES, True)
        if SYNC:
            _barrier(CNT, 4 * layer + 3, G)
        _stage(Wdn, layer * H, 0, H, I, D, A, BN, BK, STAGES, False)
        if SYNC:
            _barrier(CNT, 4 * layer + 4, G)


def _weights(shape: dict, seed: int = 0) -> dict:
    """Stacked bf16 weights of all layers, scaled so activations stay near 1 through the chain."""
    g = torch.Generator(device="cuda" if torch.cuda.is_available() else "cpu").manual_seed(seed)
    dev = g.device
    L, h, qkv, i = shape["layers"], shape["h"], shape["qkv"], shape["i"]

    def w(n, k):
        return (torch.randn(n, k, generator=g, device=dev) * k ** -0.5).to(torch.bfloat16)

    return {"qkv": w(L * qkv, h), "o": w(L * h, h), "gate_up": w(L * 2 * i, h) * 1.3, "down": w(L * h, i)}


def launches(ws: dict, shape: dict, x: torch.Tensor) -> torch.Tensor:
    """The chain as the decode step runs it: one plugin GEMV launch a projection, the table's configs."""
    L, h, qkv, i = shape["layers"], shape["h"], shape["qkv"], shape["i"]
    from workbench.runtime.gemv_policy import H100_GEMV as table

    a = x
    for layer in range(L):
        b = gm.gemv(a, ws["qkv"][layer * qkv:(layer + 1) * qkv], None, table.get((1, qkv, h)))
        c = gm.gemv(b[:, :h], ws["o"][layer * h:(layer + 1) * h], None, table.get((1, h, h)))
        d = gm.gemv(c, ws["gate_up"][layer * 2 * i:(layer + 1) * 2 * i], None, table.get((1, 2 * i, h, "swiglu")),
                    swiglu=True)
        a = gm.gemv(d, ws["down"][layer * h:(layer + 1) * h], None, table.get((1, h, i)))
    return a


class Persistent:
    """The chain in one launch (see _chain), its buffers and descriptors made once."""

    def __init__(self, ws: dict, shape: dict, programs: int, bn: int, bk: int, stages: int, warps: int,
                 sync: bool = True):
        from triton.tools.tensor_descriptor import TensorDescriptor

        self.shape, self.programs, self.bn, self.bk, self.stages, self.warps = shape, programs, bn, bk, stages, warps
        self.sync = sync
        dev = ws["qkv"].device
        h, qkv, i = shape["h"], shape["qkv"], shape["i"]
        self.bufs = [torch.zeros(n, dtype=torch.bfloat16, device=dev) for n in (h, qkv, h, i)]
        self.cnt = torch.zeros(4 * shape["layers"] + 1, dtype=torch.int32, device=dev)
        self.desc = [TensorDescriptor(w, list(w.shape), [w.stride(0), 1], [bn, bk])
                     for w in (ws["qkv"], ws["o"], ws["gate_up"], ws["down"])]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shape
        self.cnt.zero_()
        self.bufs[0].copy_(x.reshape(-1))
        _chain[(self.programs,)](*self.desc, *self.bufs, self.cnt, s["layers"], H=s["h"], QKV=s["qkv"], I=s["i"],
                                 BN=self.bn, BK=self.bk, STAGES=self.stages, SYNC=self.sync, num_warps=self.warps,
                                 num_stages=1)
        return self.bufs[0].view(1, -1)

    def gave_up(self) -> int:
        """How many programs stopped waiting at a barrier in the last run (not all were resident)."""
        return int(self.cnt[0].item())


def graph_ms(fn, replays: int = 20) -> float:
    """Median time of fn captured in a CUDA graph, by CUDA events over `replays` replays."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def run(name: str, args, out: dict) -> None:
    shape = SHAPES[name]
    ws = _weights(shape)
    nbytes = sum(w.numel() * w.element_size() for w in ws.values())
    x = torch.randn(1, shape["h"], device=ws["qkv"].device).to(torch.bfloat16)
    ref = launches(ws, shape, x)
    row = out.setdefault(name, {"weight_bytes": nbytes})
    if interpreting():
        got = Persistent(ws, shape, 1, 16, 64, 1, 4)(x)
        err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
        row["tiny_rel_err"] = err
        print(f"[{name}] persistent against launches: relative error {err:.2e}")
        return
    t = graph_ms(lambda: launches(ws, shape, x))
    row["launches"] = {"ms": round(t, 4), "TBps": round(nbytes / t / 1e9, 3)}
    print(f"[{name}] launches: {t:.4f} ms, {nbytes / t / 1e9:.3f} TB/s", flush=True)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for per_sm in [int(p) for p in args.programs.split(",")]:
        for bn, bk, stages, warps, sync in CONFIGS:
            p = Persistent(ws, shape, sms * per_sm, bn, bk, stages, warps, sync)
            got = p(x)
            torch.cuda.synchronize()
            key = f"{per_sm}/SM bn{bn} bk{bk} s{stages} w{warps}" + ("" if sync else " no barriers")
            if p.gave_up():
                row[key] = {"gave_up": p.gave_up()}
                print(f"[{name}] persistent {key}: {p.gave_up()} programs gave up waiting (not all resident)")
                continue
            err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
            t2 = graph_ms(lambda: p(x))
            row[key] = {"ms": round(t2, 4), "TBps": round(nbytes / t2 / 1e9, 3), "rel_err": round(err, 5),
                        "launches_over_persistent": round(t / t2, 3)}
            print(f"[{name}] persistent {key}: {t2:.4f} ms, {nbytes / t2 / 1e9:.3f} TB/s, x{t / t2:.3f} "
                  f"(rel err {err:.1e})", flush=True)
    ws.clear()
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--programs", default="1,2", help="programs an SM, comma-separated")
    ap.add_argument("--tiny", action="store_true", help="small shapes, one program (the CPU interpreter's check)")
    ap.add_argument("--name", default="persistent_probe_h100")
    args = ap.parse_args()
    result = {"benchmark": "persistent_probe", "machine": machine(), "models": {}}
    for name in (["tiny"] if args.tiny else args.models.split(",")):
        run(name, args, result["models"])
    if not args.tiny:
        print(f"-> {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
