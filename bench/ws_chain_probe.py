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

The launches here read each layer's weights out of one stacked tensor a projection; int8 GEMVs measured 14% slower
that way than on weights allocated a layer at a time (bench/decode_block.py's `plain_launches`, H100: 8B 3.055
against 2.688 ms), so compare int8 against that baseline, not this one (bf16 is unaffected).

    python bench/ws_chain_probe.py                 # Llama-3.2-1B and Llama-3-8B shapes
    python bench/ws_chain_probe.py --models 8b --formats int8 --rows 8,16 --warps 4,8

Needs an sm_90 GPU (`--compile-only` compiles it for one on the CPU). Writes bench/results/ws_chain_probe_h100.json
(and $OUT/ when set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, write_result  # noqa: E402
from persistent_probe import SHAPES, _rel_err, _weights, graph_ms, launches  # noqa: E402

from workbench.plugins.decode_block import (_arrive, _buffers, _produce_stage, _stage, _stage_input, x_rows,  # noqa: E402
                                            _wait)  # the block's pieces; its stages without their norms

# a weight tile (one TMA copy): `rows` (8 or 16) rows of 256 bf16 or of 512 int8 values, 4 or 8 KiB
TW = {"bf16": 256, "int8": 128}  # a tile's width in the stored units (bf16 values, int32 words of four int8)
# none: no waits (the weights' streaming alone); barrier: one launch; layers: a launch a layer, in a CUDA graph with
# programmatic dependent launch (the cost of splitting the chain where attention would sit)
MODES = {"none": 0, "barrier": 1, "layers": 1}


@gluon.jit
def _produce(descs, ring, full, empty, L0, L1, H: gl.constexpr, QKV: gl.constexpr, I: gl.constexpr, WQ: gl.constexpr):
    """The producer warp: every weight tile of this program's schedule, in the consumers' order, into the ring."""
    d_qkv, d_o, d_gu, d_dn = descs
    CH: gl.constexpr = 512 if WQ == 8 else 256  # values of x a tile spans
    R: gl.constexpr = ring.type.shape[1]  # rows of a tile
    pid = gl.program_id(0)
    G = gl.num_programs(0)
    c = 0
    for layer in range(L0, L1):
        # no trace (its pointer unused: the block's TRACE is off) and unpaired slots
        c = _produce_stage(d_qkv, ring, full, empty, c, pid, G, layer * QKV, 0, QKV // R, H // CH, False, None, False)
        c = _produce_stage(d_o, ring, full, empty, c, pid, G, layer * H, 0, H // R, H // CH, False, None, False)
        c = _produce_stage(d_gu, ring, full, empty, c, pid, G, layer * 2 * I, I, I // R, H // CH, True, None, False)
        c = _produce_stage(d_dn, ring, full, empty, c, pid, G, layer * H, 0, H // R, I // CH, False, None, False)


@gluon.jit
def _wait_stage(CNT, idx, G, MODE: gl.constexpr):
    """Consumers: wait until every program arrived at counter idx, unless MODE is 0."""
    if MODE == 1:
        _wait(CNT, idx, G)
    else:
        gl.thread_barrier()


@gluon.jit
def _consume_stage(ring, full, empty, xs, c, X, Y, S, CNT, g, G, tiles, K: gl.constexpr, SWIGLU: gl.constexpr,
                   WQ: gl.constexpr, MODE: gl.constexpr):
    """Consumers: one stage (global stage index g): wait for its input X [K], keep it in shared memory, multiply
    this program's row tiles of the ring into Y (plugins/decode_block.py's stage, without a norm)."""
    if g > 0:
        _wait_stage(CNT, g - 1, G, MODE)
    _stage_input(xs, X, X, X, X, K, 0.0, False)
    c = _stage(ring, full, empty, xs, c, Y, S, tiles, K, SWIGLU, WQ, False)
    _arrive(CNT, g)
    return c


@gluon.jit
def _consume(ring, full, empty, xs, A, B, C, D, S_qkv, S_o, S_gu, S_dn, CNT, L0, L1, H: gl.constexpr, QKV: gl.constexpr,
             I: gl.constexpr, WQ: gl.constexpr, MODE: gl.constexpr):
    """The consumer warps: A -> qkv -> B; B[:H] -> o -> C; C -> gate_up, swiglu -> D; D -> down -> A, a layer."""
    G = gl.num_programs(0)
    R: gl.constexpr = ring.type.shape[1]
    c = 0
    for layer in range(L0, L1):
        g = 4 * layer
        c = _consume_stage(ring, full, empty, xs, c, A, B, S_qkv + layer * QKV, CNT, g, G, QKV // R, H, False, WQ,
                           MODE)
        c = _consume_stage(ring, full, empty, xs, c, B, C, S_o + layer * H, CNT, g + 1, G, H // R, H, False, WQ, MODE)
        c = _consume_stage(ring, full, empty, xs, c, C, D, S_gu + layer * 2 * I, CNT, g + 2, G, I // R, H, True, WQ,
                           MODE)
        c = _consume_stage(ring, full, empty, xs, c, D, A, S_dn + layer * H, CNT, g + 3, G, H // R, I, False, WQ,
                           MODE)


@gluon.jit
def _chain_ws(d_qkv, d_o, d_gu, d_dn, A, B, C, D, S_qkv, S_o, S_gu, S_dn, CNT, L0, L1, H: gl.constexpr,
              QKV: gl.constexpr, I: gl.constexpr, RING: gl.constexpr, XR: gl.constexpr, WQ: gl.constexpr,
              MODE: gl.constexpr):
    ring, full, empty, xs = _buffers(d_qkv, RING, XR, WQ, False)
    # launched with programmatic dependent launch (a launch a layer): the next launch may start as soon as SMs free
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False,
                              pack=1)
    gl.warp_specialize([
        (_consume, (ring, full, empty, xs, A, B, C, D, S_qkv, S_o, S_gu, S_dn, CNT, L0, L1, H, QKV, I, WQ, MODE)),
        (_produce, ((d_qkv, d_o, d_gu, d_dn), ring, full, empty, L0, L1, H, QKV, I, WQ)),
    ], [1], [40])


def quantize(ws: dict) -> dict:
    """int8 weights per output channel (as workbench's w8a16: round-to-nearest of w / (max |w| / 127)), scales."""
    out = {}
    for k, w in ws.items():
        s = (w.float().abs().amax(1) / 127).clamp_min(1e-8)
        out[k] = (torch.round(w.float() / s[:, None]).clamp(-127, 127).to(torch.int8), s)
    return out


def launches_int8(qs: dict, shape: dict, x: torch.Tensor) -> torch.Tensor:
    """The int8 chain as the decode step runs it: the plugin's int8 GEMVs, the table's configs."""
    from workbench.plugins import gemv as gm
    from workbench.runtime.gemv_policy import H100_GEMV as table

    L, h, qkv, i = shape["layers"], shape["h"], shape["qkv"], shape["i"]

    def lin(a, k, layer, rows, swiglu=False):
        q, s = qs[k]
        key = (1, rows, a.shape[1], "w8a16") + (("swiglu",) if swiglu else ())
        return gm.w8a16_gemv(a, q[layer * rows:(layer + 1) * rows], s[layer * rows:(layer + 1) * rows], None,
                             table.get(key), swiglu)

    a = x
    for layer in range(L):
        b = lin(a, "qkv", layer, qkv)
        c = lin(b[:, :h], "o", layer, h)
        d = lin(c, "gate_up", layer, 2 * i, True)
        a = lin(d, "down", layer, h)
    return a


class WarpSpecialized:
    """The chain in one launch of _chain_ws (bf16 or int8 weights), its buffers and descriptors made once."""

    def __init__(self, ws: dict, shape: dict, ring_kib: int, mode: str = "barrier", fmt: str = "bf16", warps: int = 4,
                 rows: int = 8):
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        self.shape, self.mode, self.wq = shape, MODES[mode], 8 if fmt == "int8" else 0
        self.per_layer = mode == "layers"
        self.ring = ring_kib // (rows // 2)  # slots of rows / 2 KiB
        self.warps = warps  # the consumers' (the producer is one more)
        dev = next(iter(ws.values()))[0].device if fmt == "int8" else ws["qkv"].device
        h, qkv, i = shape["h"], shape["qkv"], shape["i"]
        ch = 512 if fmt == "int8" else 256
        if qkv % rows or h % ch or i % ch:
            raise ValueError(f"shape {shape}: rows must be whole {rows}-row tiles, K whole {ch}-wide chunks")
        # x of the widest stage in shared memory (decode_block.x_rows)
        self.xr = x_rows(self.wq, h, i)
        self.bufs = [torch.zeros(n, dtype=torch.bfloat16, device=dev) for n in (h, qkv, h, i)]
        self.cnt = torch.zeros(4 * shape["layers"], dtype=torch.int32, device=dev)
        keys = ("qkv", "o", "gate_up", "down")
        if fmt == "int8":
            layout = gl.NVMMASharedLayout.get_default_for([rows, TW["int8"]], gl.int32)
            self.desc = [TensorDescriptor.from_tensor(ws[k][0].view(torch.int32), [rows, TW["int8"]], layout)
                         for k in keys]
            self.scales = [ws[k][1] for k in keys]
        else:
            layout = gl.NVMMASharedLayout.get_default_for([rows, TW["bf16"]], gl.bfloat16)
            self.desc = [TensorDescriptor.from_tensor(ws[k], [rows, TW["bf16"]], layout) for k in keys]
            self.scales = [self.bufs[0]] * 4  # not read
        self.programs = torch.cuda.get_device_properties(dev).multi_processor_count

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shape
        self.cnt.zero_()
        self.bufs[0].copy_(x.reshape(-1))
        spans = [(i, i + 1) for i in range(s["layers"])] if self.per_layer else [(0, s["layers"])]
        for l0, l1 in spans:
            _chain_ws[(self.programs,)](*self.desc, *self.bufs, *self.scales, self.cnt, l0, l1, H=s["h"],
                                        QKV=s["qkv"], I=s["i"], RING=self.ring, XR=self.xr, WQ=self.wq,
                                        MODE=self.mode, num_warps=self.warps, launch_pdl=self.per_layer)
        return self.bufs[0].view(1, -1)


def run(name: str, ring_kib: int, fmts: list[str], warps: list[int], rows: list[int], out: dict) -> None:
    shape = SHAPES[name]
    ws = _weights(shape)
    x = torch.randn(1, shape["h"], device="cuda").to(torch.bfloat16)
    one = dict(shape, layers=1)  # one layer's chain: its values stay small enough to compare
    for fmt in fmts:
        w = quantize(ws) if fmt == "int8" else ws
        ref_fn = launches_int8 if fmt == "int8" else launches
        nbytes = sum((v[0] if fmt == "int8" else v).numel() * (1 if fmt == "int8" else 2) for v in w.values())
        row = out.setdefault(name, {}).setdefault(fmt, {"weight_bytes": nbytes})
        ref1 = ref_fn(w, one, x)
        for nw in warps:
            row[f"one_layer_rel_err_warps{nw}"] = err = _rel_err(WarpSpecialized(w, one, ring_kib, fmt=fmt,
                                                                                 warps=nw)(x), ref1)
            print(f"[{name} {fmt}] one layer, {nw} consumer warps, against launches: relative error {err:.2e}",
                  flush=True)
        t = graph_ms(lambda: ref_fn(w, shape, x))
        row["launches"] = {"ms": round(t, 4), "TBps": round(nbytes / t / 1e9, 3)}
        print(f"[{name} {fmt}] launches: {t:.4f} ms, {nbytes / t / 1e9:.3f} TB/s", flush=True)
        for nr, nw, mode in ((r, n, m) for r in rows for n in warps for m in MODES):
            p = WarpSpecialized(w, shape, ring_kib, mode, fmt, nw, nr)
            t2 = graph_ms(lambda: p(x))
            key = f"rows{nr} warps{nw} {mode}"
            row[key] = {"ms": round(t2, 4), "TBps": round(nbytes / t2 / 1e9, 3), "launches_over_this": round(t / t2, 3)}
            print(f"[{name} {fmt}] warp-specialised {key}: {t2:.4f} ms, {nbytes / t2 / 1e9:.3f} TB/s, x{t / t2:.3f}",
                  flush=True)
    ws.clear()
    torch.cuda.empty_cache()


def compile_only(rows: int = 16) -> dict:
    """Compile the kernel for sm_90 without a GPU (the Llama-3-8B shape, bf16 and int8, one consumer warpgroup): the
    PTX of each, which the CPU test checks for the producer's TMA copies and the consumers' acquire loads."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    shape = SHAPES["8b"]
    out = {}
    for fmt, ty in (("bf16", "bf16"), ("int8", "i32")):
        layout = gl.NVMMASharedLayout.get_default_for([rows, TW[fmt]], gl.int32 if fmt == "int8" else gl.bfloat16)
        sig = {n: "constexpr" for n in _chain_ws.arg_names}
        sig.update({n: f"tensordesc<{ty}[{rows}, {TW[fmt]}],{layout}>" for n in ("d_qkv", "d_o", "d_gu", "d_dn")})
        sig.update({n: "*bf16" for n in "ABCD"}, S_qkv="*fp32", S_o="*fp32", S_gu="*fp32", S_dn="*fp32", CNT="*i32",
                   L0="i32", L1="i32")
        xr = x_rows(8 if fmt == "int8" else 0, shape["h"], shape["i"])
        consts = dict(H=shape["h"], QKV=shape["qkv"], I=shape["i"], RING=128 // (rows // 2), XR=xr,
                      WQ=8 if fmt == "int8" else 0, MODE=1)
        src = GluonASTSource(_chain_ws, sig, {(_chain_ws.arg_names.index(k),): v for k, v in consts.items()})
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        out[fmt] = {"ptx": kernel.asm["ptx"], "shared": kernel.metadata.shared}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--ring-kib", type=int, default=128, help="the ring of weight tiles, KiB")
    ap.add_argument("--rows", default="8", help="rows of a weight tile (8 or 16), comma-separated")
    ap.add_argument("--formats", default="bf16,int8", help="weights: bf16, int8 (per channel, as w8a16)")
    ap.add_argument("--warps", default="4,8", help="consumer warps, comma-separated")
    ap.add_argument("--name", default="ws_chain_probe_h100")
    ap.add_argument("--compile-only", action="store_true", help="compile for sm_90 and report, no GPU needed")
    args = ap.parse_args()
    if args.compile_only:
        for fmt, k in compile_only().items():
            print(f"{fmt}: {k['shared']} bytes of shared memory, {k['ptx'].count('cp.async.bulk.tensor')} TMA copies, "
                  f"{k['ptx'].count('ld.global.gpu.acquire')} acquire loads")
        return
    result = {"benchmark": "ws_chain_probe", "machine": machine(), "models": {}}
    for name in args.models.split(","):
        run(name, args.ring_kib, args.formats.split(","), [int(n) for n in args.warps.split(",")],
            [int(r) for r in args.rows.split(",")], result["models"])
    print(f"-> {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
