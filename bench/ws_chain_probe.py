"""Does a weight stream that never waits for the chain's dependencies hide them? A probe for that question, not
an engine path: the same chain of projections as bench/persistent_probe.py (every layer's qkv, o, gate_up with its
activation and down for a Llama shape in bf16, one row, each output feeding the next projection), timed against
the plugin's GEMV launches in a CUDA graph with programmatic dependent launch.

The kernel (Gluon, warp-specialised; one program an SM, all resident):

- a producer warp walks the program's whole schedule (layer, stage, row tile, K chunk) and brings each weight
  tile into a ring of RING shared-memory slots by TMA, as soon as a slot is free. It never waits for a stage's
  input, so while the consumers wait at a stage boundary it keeps copying the next stage's first tiles;
- four consumer warps wait for the stage's input (a device-wide counter: every program arrives after writing its
  part of the stage's output), take it into shared memory, multiply the slots' tiles as they land and release them.

`mode`: `barrier` as described; `none` skips the waits (wrong results: the time of the weights' streaming alone).
bench/persistent_probe.py measured the same chain without the producer (its copies issued by Triton's pipeliner
from the consumers, so a stage boundary drained them): 1B 0.813 ms against 0.775 ms of launches (H100).

    python bench/ws_chain_probe.py                 # Llama-3.2-1B and Llama-3-8B shapes
    python bench/ws_chain_probe.py --models 1b --ring 24,40

Needs an sm_90 GPU. Writes bench/results/ws_chain_probe_h100.json (and $OUT/ when set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from persistent_probe import SHAPES, _rel_err, _weights, graph_ms, launches  # noqa: E402

BN, BK = 8, 256  # a weight tile: 8 rows of 256 bf16 (4 KiB, one TMA copy)
MODES = {"none": 0, "barrier": 1}


@gluon.jit
def _produce(descs, ring, full, empty, L, H: gl.constexpr, QKV: gl.constexpr, I: gl.constexpr):
    """The producer warp: every weight tile of this program's schedule, in the consumers' order, into the ring."""
    d_qkv, d_o, d_gu, d_dn = descs
    RING: gl.constexpr = ring.type.shape[0]
    pid = gl.program_id(0)
    G = gl.num_programs(0)
    c = 0
    for layer in range(L):
        c = _produce_stage(d_qkv, ring, full, empty, c, pid, G, layer * QKV, 0, QKV // 8, H // 256, False)
        c = _produce_stage(d_o, ring, full, empty, c, pid, G, layer * H, 0, H // 8, H // 256, False)
        c = _produce_stage(d_gu, ring, full, empty, c, pid, G, layer * 2 * I, I, I // 8, H // 256, True)
        c = _produce_stage(d_dn, ring, full, empty, c, pid, G, layer * H, 0, H // 8, I // 256, False)
    gl.static_assert(RING > 1)


@gluon.jit
def _produce_stage(desc, ring, full, empty, c, pid, G, row0, up, tiles, steps, SWIGLU: gl.constexpr):
    RING: gl.constexpr = ring.type.shape[0]
    for t in range(pid, tiles, G):
        for kk in range(steps):
            for half in gl.static_range(2 if SWIGLU else 1):
                slot = c % RING
                mbarrier.wait(empty.index(slot), ((c // RING) & 1) ^ 1)
                mbarrier.expect(full.index(slot), desc.block_type.nbytes)
                tma.async_copy_global_to_shared(desc, [row0 + half * up + t * 8, kk * 256], full.index(slot),
                                                ring.index(slot))
                c += 1
    return c


@gluon.jit
def _wait_stage(CNT, idx, G, MODE: gl.constexpr):
    """Consumers: wait until every program arrived at counter idx (acquire), unless MODE is 0."""
    if MODE == 1:
        seen = gl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
        while seen < G:
            seen = gl.atomic_add(CNT + idx, 0, sem="acquire", scope="gpu")
    gl.thread_barrier()


@gluon.jit
def _arrive_stage(CNT, idx):
    """Consumers: this program wrote its part of the stage (release)."""
    gl.thread_barrier()
    gl.atomic_add(CNT + idx, 1, sem="release", scope="gpu")


@gluon.jit
def _consume_stage(ring, full, empty, xs, c, X, Y, CNT, g, G, tiles, K: gl.constexpr, SWIGLU: gl.constexpr,
                   MODE: gl.constexpr):
    XROWS: gl.constexpr = xs.type.shape[0]
    """Consumers: one stage (global stage index g): wait for its input X [K], keep it in shared memory, multiply
    this program's row tiles of the ring into Y (SWIGLU: silu(gate) * up, the rows' two tiles in turn)."""
    RING: gl.constexpr = ring.type.shape[0]
    tile_l: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [4, 1], [1, 0])
    y_l: gl.constexpr = gl.SliceLayout(1, tile_l)
    STEPS: gl.constexpr = K // 256
    load_l: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [4, 1], [1, 0])
    if g > 0:
        _wait_stage(CNT, g - 1, G, MODE)
    rows = gl.arange(0, XROWS, layout=gl.SliceLayout(1, load_l))
    cols = gl.arange(0, 256, layout=gl.SliceLayout(0, load_l))
    offs = rows[:, None] * 256 + cols[None, :]
    xs.store(gl.load(X + offs, mask=offs < K, other=0.0, cache_modifier=".cg"))
    gl.thread_barrier()
    xrows = xs._reinterpret(gl.bfloat16, [XROWS, 1, 256], xs.layout)  # chunk kk as a [1, 256] row
    pid = gl.program_id(0)
    for t in range(pid, tiles, G):
        acc = gl.zeros([8, 256], gl.float32, tile_l)
        accu = gl.zeros([8, 256], gl.float32, tile_l)
        for kk in range(STEPS):
            x = xrows.index(kk).load(tile_l).to(gl.float32)
            slot = c % RING
            mbarrier.wait(full.index(slot), (c // RING) & 1)
            w = ring.index(slot).load(tile_l)
            fence_async_shared()
            mbarrier.arrive(empty.index(slot), count=1)
            c += 1
            acc += w.to(gl.float32) * x
            if SWIGLU:
                slot = c % RING
                mbarrier.wait(full.index(slot), (c // RING) & 1)
                wu = ring.index(slot).load(tile_l)
                fence_async_shared()
                mbarrier.arrive(empty.index(slot), count=1)
                c += 1
                accu += wu.to(gl.float32) * x
        y = gl.sum(acc, axis=1)
        if SWIGLU:
            gate = y.to(gl.bfloat16).to(gl.float32)
            up = gl.sum(accu, axis=1).to(gl.bfloat16).to(gl.float32)
            y = (gate / (1.0 + gl.exp(-gate))).to(gl.bfloat16).to(gl.float32) * up
        gl.store(Y + t * 8 + gl.arange(0, 8, layout=y_l), y.to(gl.bfloat16))
    _arrive_stage(CNT, g)
    return c


@gluon.jit
def _consume(ring, full, empty, xs, A, B, C, D, CNT, L, H: gl.constexpr, QKV: gl.constexpr, I: gl.constexpr,
             MODE: gl.constexpr):
    """The consumer warps: A -> qkv -> B; B[:H] -> o -> C; C -> gate_up, swiglu -> D; D -> down -> A, a layer."""
    G = gl.num_programs(0)
    c = 0
    for layer in range(L):
        g = 4 * layer
        c = _consume_stage(ring, full, empty, xs, c, A, B, CNT, g, G, QKV // 8, H, False, MODE)
        c = _consume_stage(ring, full, empty, xs, c, B, C, CNT, g + 1, G, H // 8, H, False, MODE)
        c = _consume_stage(ring, full, empty, xs, c, C, D, CNT, g + 2, G, I // 8, H, True, MODE)
        c = _consume_stage(ring, full, empty, xs, c, D, A, CNT, g + 3, G, H // 8, I, False, MODE)


@gluon.jit
def _chain_ws(d_qkv, d_o, d_gu, d_dn, A, B, C, D, CNT, L, H: gl.constexpr, QKV: gl.constexpr, I: gl.constexpr,
              RING: gl.constexpr, XROWS: gl.constexpr, MODE: gl.constexpr):
    ring = gl.allocate_shared_memory(gl.bfloat16, [RING, 8, 256], d_qkv.layout)
    full = gl.allocate_shared_memory(gl.int64, [RING, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [RING, 1], mbarrier.MBarrierLayout())
    xs = gl.allocate_shared_memory(gl.bfloat16, [XROWS, 256],
                                   gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))
    for i in gl.static_range(RING):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    gl.warp_specialize([
        (_consume, (ring, full, empty, xs, A, B, C, D, CNT, L, H, QKV, I, MODE)),
        (_produce, ((d_qkv, d_o, d_gu, d_dn), ring, full, empty, L, H, QKV, I)),
    ], [1], [40])


class WarpSpecialized:
    """The chain in one launch of _chain_ws, its buffers and descriptors made once."""

    def __init__(self, ws: dict, shape: dict, ring: int, mode: str = "barrier"):
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        self.shape, self.ring, self.mode = shape, ring, MODES[mode]
        dev = ws["qkv"].device
        h, qkv, i = shape["h"], shape["qkv"], shape["i"]
        if qkv % BN or h % BK or i % BK:
            raise ValueError(f"shape {shape}: rows must be whole {BN}-row tiles, K whole {BK}-wide chunks")
        self.xrows = triton.next_power_of_2(max(h, i) // BK)  # x of the widest stage, in shared memory
        self.bufs = [torch.zeros(n, dtype=torch.bfloat16, device=dev) for n in (h, qkv, h, i)]
        self.cnt = torch.zeros(4 * shape["layers"], dtype=torch.int32, device=dev)
        layout = gl.NVMMASharedLayout.get_default_for([BN, BK], gl.bfloat16)
        self.desc = [TensorDescriptor.from_tensor(ws[k], [BN, BK], layout) for k in ("qkv", "o", "gate_up", "down")]
        self.programs = torch.cuda.get_device_properties(dev).multi_processor_count

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shape
        self.cnt.zero_()
        self.bufs[0].copy_(x.reshape(-1))
        _chain_ws[(self.programs,)](*self.desc, *self.bufs, self.cnt, s["layers"], H=s["h"], QKV=s["qkv"], I=s["i"],
                                    RING=self.ring, XROWS=self.xrows, MODE=self.mode, num_warps=4)
        return self.bufs[0].view(1, -1)


def run(name: str, rings: list[int], out: dict) -> None:
    shape = SHAPES[name]
    ws = _weights(shape)
    nbytes = sum(w.numel() * w.element_size() for w in ws.values())
    x = torch.randn(1, shape["h"], device="cuda").to(torch.bfloat16)
    row = out.setdefault(name, {"weight_bytes": nbytes})
    one = dict(shape, layers=1)  # one layer's chain: its values stay small enough to compare
    row["one_layer_rel_err"] = err = _rel_err(WarpSpecialized(ws, one, rings[0])(x), launches(ws, one, x))
    print(f"[{name}] one layer, warp-specialised against launches: relative error {err:.2e}", flush=True)
    t = graph_ms(lambda: launches(ws, shape, x))
    row["launches"] = {"ms": round(t, 4), "TBps": round(nbytes / t / 1e9, 3)}
    print(f"[{name}] launches: {t:.4f} ms, {nbytes / t / 1e9:.3f} TB/s", flush=True)
    ref = launches(ws, shape, x)
    for ring in rings:
        for mode in MODES:
            p = WarpSpecialized(ws, shape, ring, mode)
            got = p(x)
            torch.cuda.synchronize()
            t2 = graph_ms(lambda: p(x))
            key = f"ring{ring} {mode}"
            row[key] = {"ms": round(t2, 4), "TBps": round(nbytes / t2 / 1e9, 3),
                        "launches_over_this": round(t / t2, 3)}
            if mode == "barrier":
                row[key]["rel_err"] = round(_rel_err(got, ref), 5)
            print(f"[{name}] warp-specialised {key}: {t2:.4f} ms, {nbytes / t2 / 1e9:.3f} TB/s, x{t / t2:.3f}",
                  flush=True)
    ws.clear()
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--ring", default="24,40", help="weight tiles in the ring (4 KiB each), comma-separated")
    ap.add_argument("--name", default="ws_chain_probe_h100")
    args = ap.parse_args()
    result = {"benchmark": "ws_chain_probe", "machine": machine(), "models": {}}
    for name in args.models.split(","):
        run(name, [int(r) for r in args.ring.split(",")], result["models"])
    print(f"-> {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
