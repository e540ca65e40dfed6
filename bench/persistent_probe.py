"""Would one persistent kernel beat the decode step's chain of GEMV launches? A probe for that question, not an
engine path: every layer's four projections (qkv, o, gate_up with its activation, down) for a Llama shape in bf16,
one row, each output feeding the next projection (qkv's first H values stand in for attention, down feeds the next
layer's qkv; no norms, no attention), timed two ways in one process:

- `launches`: the plugin's GEMVs (plugins/gemv.py) with the built-in table's configs, captured in one CUDA graph
  with programmatic dependent launch, as the engine's decode step runs them;
- `persistent`: one kernel of PROGRAMS programs (a few an SM, all resident), every stage's row tiles dealt to the
  programs in turn, weights in TMA tiles pipelined over STAGES buffers, and between stages (CONFIGS' last entry)
  `barrier`: a device-wide barrier (an atomic counter each: release on arrival, acquire while spinning);
  `split`: the arrival after a stage, the wait inside the next stage's first iteration, after its first weight
  copies; `none`: no synchronisation at all (wrong results: the time of the weights' streaming alone).

    python bench/persistent_probe.py                        # Llama-3.2-1B and Llama-3-8B shapes
    python bench/persistent_probe.py --models 1b --programs 1,2,4

Both read the same weights once a step. Reports each way's time, its read rate, and the ratio. The barriers spin a
bounded number of times; a `barrier` run that hits the bound is reported as such (its programs were not all
resident), not timed (a `split` one is bounded but not counted). Writes bench/results/persistent_probe_h100.json (and $OUT/ when set). On the CPU (TRITON_INTERPRET=1) `--tiny`
runs small shapes with one program, to check the kernel's arithmetic against the launches'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402

from workbench.plugins import gemv as gm  # noqa: E402
from workbench.plugins.common import interpreting  # noqa: E402

# BLOCK_N, BLOCK_K, stages, warps, synchronisation (_chain's MODES; "none": the weights' streaming alone)
CONFIGS = [(16, 256, 4, 4, "barrier"), (16, 256, 6, 4, "barrier"), (16, 256, 4, 4, "split"), (16, 256, 6, 4, "split"),
           (8, 256, 6, 4, "split"), (8, 256, 8, 4, "split"), (16, 256, 4, 4, "none"), (16, 256, 6, 4, "none")]
SHAPES = {"1b": dict(layers=16, h=2048, qkv=3072, i=8192), "8b": dict(layers=32, h=4096, qkv=6144, i=14336),
          "tiny": dict(layers=2, h=256, qkv=384, i=512)}


@triton.jit
def _arrive(CNT, idx):
    """This program has written its part of a stage: count it at counter idx (release)."""
    tl.debug_barrier()
    tl.atomic_add(CNT + idx, 1, sem="release", scope="gpu")


@triton.jit
def _wait(CNT, idx, G):
    """Poll counter idx (acquire) until all G programs arrived: their writes are then visible. Polls at most 2^16
    times (tens of milliseconds); a program that gives up counts in CNT[0]."""
    seen = tl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
    spins = 0
    while (seen < G) & (spins < 65536):
        seen = tl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
        spins += 1
    if seen < G:
        tl.atomic_add(CNT, 1, sem="relaxed", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _wait_asm(CNT, idx, G):
    """_wait as one inline-PTX loop (every thread polls; at most 2^20 times), so the loop around it stays
    software-pipelined (Triton leaves a loop that holds a while loop unpipelined); returns 0 from the asm, for x's
    offsets (see plugins.common.gdc_wait_zero)."""
    return tl.inline_asm_elementwise(
        asm="""{ .reg .pred p, q; .reg .b32 v, n; mov.b32 n, 0;
        WAIT: ld.acquire.gpu.global.b32 v, [$1]; add.s32 n, n, 1; setp.lt.s32 p, v, $2; setp.lt.s32 q, n, 1048576;
        and.pred p, p, q; @p bra WAIT; mov.b32 $0, 0; }""",
        constraints="=r,l,r", args=[CNT + idx + tl.zeros([1], tl.int32), G + tl.zeros([1], tl.int32)],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _stage(Wd, row0, up0, N, K, X, Y, CNT, wait, G, BN: tl.constexpr, BK: tl.constexpr, STAGES: tl.constexpr,
           SWIGLU: tl.constexpr, SPLIT: tl.constexpr, ASM: tl.constexpr):
    """This program's row tiles of y = x @ W[row0:row0 + N]^T (SWIGLU: silu(gate) * up, the up rows at up0); x is
    read from L2 (.cg: another SM wrote it). SPLIT: first wait for counter `wait` (x's stage; none where 0), inside
    the first iteration, once the pipeline's first weight copies are on their way."""
    for t in range(tl.program_id(0), N // BN, G):
        acc = tl.zeros([BN, BK], tl.float32)
        accu = tl.zeros([BN, BK], tl.float32)
        dep = tl.zeros([1], tl.int32)
        for k0 in tl.range(0, K, BK, num_stages=STAGES):
            w = Wd.load([row0 + t * BN, k0]).to(tl.float32)
            wu = w
            if SWIGLU:
                wu = Wd.load([up0 + t * BN, k0]).to(tl.float32)
            if SPLIT:
                if (k0 == 0) & (t == tl.program_id(0)) & (wait > 0):
                    if ASM:
                        dep = _wait_asm(CNT, wait, G)
                    else:
                        _wait(CNT, wait, G)
            x = tl.load(X + k0 + dep + tl.arange(0, BK), cache_modifier=".cg").to(tl.float32)[None, :]
            acc += w * x
            if SWIGLU:
                accu += wu * x
        y = tl.sum(acc, axis=1)
        if SWIGLU:
            g = y.to(tl.bfloat16).to(tl.float32)
            y = (g / (1.0 + tl.exp(-g))).to(tl.bfloat16).to(tl.float32) * tl.sum(accu, axis=1).to(tl.bfloat16)
        tl.store(Y + t * BN + tl.arange(0, BN), y.to(tl.bfloat16))


@triton.jit
def _sync(CNT, idx, G, MODE: tl.constexpr):
    """After a stage: MODE 1 a whole barrier; 2 only the arrival (the next stage waits in its first iteration)."""
    if MODE == 1:
        _arrive(CNT, idx)
        _wait(CNT, idx, G)
    elif MODE == 2:
        _arrive(CNT, idx)


@triton.jit
def _chain(Wqkv, Wo, Wgu, Wdn, A, B, C, D, CNT, L, H: tl.constexpr, QKV: tl.constexpr, I: tl.constexpr,
           BN: tl.constexpr, BK: tl.constexpr, STAGES: tl.constexpr, MODE: tl.constexpr, ASM: tl.constexpr):
    """All layers' projections in one launch: A -> qkv -> B; B[:H] -> o -> C; C -> gate_up, swiglu -> D; D -> down
    -> A. MODE (MODES): 1 a barrier after each stage, 2 split barriers (arrive after a stage, wait inside the next
    one's first iteration), 0 none (wrong results: the time of the weights' streaming alone)."""
    G = tl.num_programs(0)
    S: tl.constexpr = MODE == 2
    for layer in range(L):
        c = 4 * layer
        _stage(Wqkv, layer * QKV, 0, QKV, H, A, B, CNT, c, G, BN, BK, STAGES, False, S, ASM)
        _sync(CNT, c + 1, G, MODE)
        _stage(Wo, layer * H, 0, H, H, B, C, CNT, c + 1, G, BN, BK, STAGES, False, S, ASM)
        _sync(CNT, c + 2, G, MODE)
        _stage(Wgu, layer * 2 * I, layer * 2 * I + I, I, H, C, D, CNT, c + 2, G, BN, BK, STAGES, True, S, ASM)
        _sync(CNT, c + 3, G, MODE)
        _stage(Wdn, layer * H, 0, H, I, D, A, CNT, c + 3, G, BN, BK, STAGES, False, S, ASM)
        _sync(CNT, c + 4, G, MODE)


MODES = {"none": 0, "barrier": 1, "split": 2}


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
                 mode: str = "barrier"):
        from triton.tools.tensor_descriptor import TensorDescriptor

        self.shape, self.programs, self.bn, self.bk, self.stages, self.warps = shape, programs, bn, bk, stages, warps
        self.mode = MODES[mode]
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
                                 BN=self.bn, BK=self.bk, STAGES=self.stages, MODE=self.mode, ASM=not interpreting(),
                                 num_warps=self.warps,
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


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


def run(name: str, args, out: dict) -> None:
    shape = SHAPES[name]
    ws = _weights(shape)
    nbytes = sum(w.numel() * w.element_size() for w in ws.values())
    x = torch.randn(1, shape["h"], device=ws["qkv"].device).to(torch.bfloat16)
    ref = launches(ws, shape, x)
    row = out.setdefault(name, {"weight_bytes": nbytes})
    if interpreting():
        for mode in ("barrier", "split"):
            err = _rel_err(Persistent(ws, shape, 1, 16, 64, 1, 4, mode)(x), ref)
            row[f"tiny_rel_err_{mode}"] = err
            print(f"[{name}] persistent ({mode}) against launches: relative error {err:.2e}")
        return
    one = dict(shape, layers=1)  # one layer's chain: its values stay small enough to compare
    ref1 = launches(ws, one, x)
    for mode in ("barrier", "split"):
        p = Persistent(ws, one, 2 * torch.cuda.get_device_properties(0).multi_processor_count, 16, 256, 4, 4, mode)
        row[f"one_layer_rel_err_{mode}"] = err = _rel_err(p(x), ref1)
        print(f"[{name}] one layer, persistent ({mode}) against launches: relative error {err:.2e}", flush=True)
    t = graph_ms(lambda: launches(ws, shape, x))
    row["launches"] = {"ms": round(t, 4), "TBps": round(nbytes / t / 1e9, 3)}
    print(f"[{name}] launches: {t:.4f} ms, {nbytes / t / 1e9:.3f} TB/s", flush=True)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for per_sm in [int(n) for n in args.programs.split(",")]:
        for bn, bk, stages, warps, mode in CONFIGS:
            p = Persistent(ws, shape, sms * per_sm, bn, bk, stages, warps, mode)
            got = p(x)
            torch.cuda.synchronize()
            key = f"{per_sm}/SM bn{bn} bk{bk} s{stages} w{warps} {mode}"
            if p.gave_up():
                row[key] = {"gave_up": p.gave_up()}
                print(f"[{name}] persistent {key}: {p.gave_up()} programs gave up waiting (not all resident)")
                continue
            err = _rel_err(got, ref)
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
