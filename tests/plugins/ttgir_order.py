"""Where the decode step's kernels read what the kernel before them wrote, relative to their PDL wait, from their
sm_90 TTGIR compiled on the CPU.

Run as a script (Triton's CPU interpreter off: `TRITON_INTERPRET=0 python tests/plugins/ttgir_order.py`), it
compiles each GEMV variant in the `prefetch` mode, the attention and the kernels that wait first thing, and prints
one JSON object: variant -> {"wait": the TTGIR line of the first griddepcontrol.wait, "reads": the lines of every op
that reads x or the norm's residual (the attention: the qkv projection's output; the others: any pointer they
read)}. Reads are found by following the SSA values made from those arguments (splat, addptr, ...) to the loads and
copies that take them. The op order in the TTGIR is the order Triton's pipeliner scheduled, which is what
test_gemv_pdl.py checks: no such read before the wait.
"""

from __future__ import annotations

import json
import re
import sys

import triton

SOURCES = ("X", "Xd", "R")  # the kernel arguments that the kernel before writes
READS = ("tt.load", "tt.descriptor_load", "ttng.async_tma_copy_global_to_local", "ttg.async_copy_global_to_local")


def read_lines(ttgir: str, sources=SOURCES) -> tuple[int, list[int]]:
    """(line of the first griddepcontrol.wait, lines of the ops that read a value made from `sources`)."""
    tainted = {f"%{name}" for name in sources}
    wait, reads = -1, []
    for i, line in enumerate(ttgir.splitlines()):
        body = line.split(" loc(")[0]
        if "griddepcontrol.wait" in body and wait < 0:
            wait = i
        lhs, _, rhs = body.partition(" = ") if " = " in body.split("(")[0] else ("", "", body)
        rhs = rhs.split(" : ")[0]
        used = set(re.findall(r"%[\w#]+", rhs))
        op = rhs.strip().split(" ")[0]
        if op in READS and used & tainted:
            reads.append(i)
        if lhs and used & tainted:
            tainted.update(re.findall(r"%[\w#]+", lhs))
    return wait, reads


def _compile(fn, types: dict, consts: dict, stages: int = 1) -> str:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {name: types.get(name, "constexpr") for name in fn.arg_names}
    constexprs = {(fn.arg_names.index(k),): v for k, v in consts.items()}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": stages})
    return kernel.asm["ttgir"]


def variants() -> dict[str, str]:
    """The TTGIR of each variant of the GEMVs in the prefetch mode: the one-row TMA tiles, and the register and
    tensor-core tiles (which wait before their loop: their pipelined copies start after it)."""
    from workbench.plugins.gemv_tma import _gemv_tma
    from workbench.plugins.gemv_tma_w4 import _gemv_tma_w4

    ints = {n: "i32" for n in ("M", "N", "K", "G", "sym", "k_per_split")}
    ptrs = {"X": "*bf16", "S": "*fp32", "Z": "*u8", "B": "*bf16", "Y": "*bf16", "P": "*fp32", "R": "*bf16",
            "NW": "*bf16", "H": "*bf16", "eps": "fp32", **ints}
    out = {}
    for name, wq, x_tma, norm, swiglu in [("bf16", 0, False, False, False), ("bf16_norm", 0, False, True, False),
                                          ("bf16_swiglu", 0, False, False, True), ("int8_xtma", 8, True, False, False),
                                          ("int8_xtma_swiglu", 8, True, False, True), ("int8_xload", 8, False, False,
                                                                                         False)]:
        bk, words = (256, 256) if wq == 0 else (1024, 256)
        types = dict(ptrs, Wd=f"tensordesc<{'i32' if wq else 'bf16'}[8, {words}]>",
                     Xd=f"tensordesc<bf16[{bk // 64}, 64]>" if x_tma else "*bf16")
        consts = dict(BLOCK_N=8, BLOCK_K=bk, SPLIT_K=1, HAS_BIAS=False, SWIGLU=swiglu, WQ=wq, PER_WORD=4 if wq else 1,
                      WORDS=words, PRMT=False, X_TMA=x_tma, STAGES=4, NORM=norm, NORM_BLOCK=2048 if norm else 1,
                      GDC_MODE=3, USE_GDC=True)
        out[name] = _compile(_gemv_tma, types, consts)
    for name, m, dot in [("int4", 1, False), ("int4_dot", 8, True)]:
        types = dict(ptrs, Wd="tensordesc<i32[16, 16]>",
                     Xd="tensordesc<bf16[2, 64]>" if m == 1 else "tensordesc<bf16[16, 128]>")
        consts = dict(BLOCK_M=1 if m == 1 else 16, BLOCK_N=16, BLOCK_K=128, SPLIT_K=1, HAS_BIAS=False, SWIGLU=False,
                      GROUP=128, WORDS=16, ASM=True, RN_ASM=True, DOT=dot, FP32=False, STAGES=4, GDC_MODE=3,
                      USE_GDC=True)
        out[name] = _compile(_gemv_tma_w4, types, consts)
    from workbench.plugins.gemv_kernels import _gemv, _gemv_words

    regs = dict(ints, sxm="i32", swn="i32")
    for name, fn, wq, m, norm in [("float_regs", _gemv, 0, 1, False), ("float_regs_norm", _gemv, 0, 1, True),
                                  ("float_dot", _gemv, 0, 8, False), ("int8_words", _gemv_words, 8, 1, False),
                                  ("int8_words_norm", _gemv_words, 8, 1, True), ("int8_words_dot", _gemv_words, 8, 8,
                                                                                 False)]:
        dot = m > 1
        types = dict(ptrs, **regs, W="*bf16", Wd="*i32")
        consts = dict(BLOCK_M=16 if dot else 1, BLOCK_N=16, BLOCK_K=512 if wq else 256, SPLIT_K=1, HAS_BIAS=False,
                      SWIGLU=False, FP32=False, WQ=wq, GROUP=1, DOT=dot, NORM=norm, NORM_BLOCK=2048 if norm else 1,
                      GDC_MODE=3, USE_GDC=True)
        if wq:
            consts.update(PER_WORD=4, WORDS=128, PRMT=not dot, PREFETCH=not dot)
        out[name] = _compile(fn, types, consts, stages=1 if not dot else 3)
    return out


def attention() -> str:
    """The TTGIR of the decode attention that rotates q and k itself: it reads the cache's earlier tokens, the
    lengths, pages and rope rows before its wait on purpose, the qkv projection's output (Q) only after it."""
    from workbench.plugins.paged_attention import _paged_decode

    types = {"Q": "*bf16", "KV": "*bf16", "O": "*bf16", "PACC": "*fp32", "PML": "*fp32", "CNT": "*i32",
             "block_tables": "*i32",
             "seq_lens": "*i32", "COS": "*fp32", "SIN": "*fp32", "POS": "*i32", "SLOTS": "*i32",
             "scale_log2": "fp32", **{n: "i32" for n in ("sqb", "sqh", "s_cos", "s_blk", "s_kv", "s_pg", "s_h", "sbt",
                                                         "cap", "sob", "soh", "window")}}
    consts = dict(REP=4, REP_PAD=16, D=64, D_PAD=64, PAGE=16, BLOCK_N=16, PART=32, NUM_PARTS=8, WINDOW=False,
                  FP32=False, ROPE=True, MERGE=True, USE_GDC=True)
    return _compile(_paged_decode, types, consts, stages=3)


def wait_first() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The TTGIR of the decode step's kernels that wait first thing (gdc_begin), with every pointer they read: none
    of them reads anything before its wait."""
    from workbench.plugins.activation import _silu_and_mul
    from workbench.plugins.gemv_kernels import _gemv_reduce
    from workbench.plugins.paged_attention import _paged_reduce
    from workbench.plugins.rms_norm import _add_rms_norm

    i32 = "i32"
    kernels = {
        "add_rms_norm": (_add_rms_norm, dict(X="*bf16", R="*bf16", W="*bf16", S="*bf16", Y="*bf16", sx=i32, sr=i32,
                                             ss=i32, sy=i32, n=i32, eps="fp32"),
                         dict(BLOCK=2048, HAS_RES=True, USE_GDC=True), ("X", "R", "W")),
        "silu_and_mul": (_silu_and_mul, dict(GU="*bf16", O="*bf16", sg=i32, so=i32, n=i32),
                         dict(BLOCK=1024, USE_GDC=True), ("GU",)),
        "partition_merge": (_paged_reduce, dict(O="*bf16", PACC="*fp32", PML="*fp32", sob=i32, soh=i32),
                            dict(D=64, D_PAD=64, NUM_PARTS=8, USE_GDC=True), ("PACC", "PML")),
        "gemv_reduce": (_gemv_reduce, dict(P="*fp32", S="*fp32", B="*bf16", Y="*bf16", M=i32, N=i32, sym=i32),
                        dict(BLOCK=1024, SPLIT_K=4, WQ=8, HAS_BIAS=True, SWIGLU=True, USE_GDC=True), ("P", "S", "B")),
    }
    return {name: (_compile(fn, types, consts), sources) for name, (fn, types, consts, sources) in kernels.items()}


if __name__ == "__main__":
    order = {name: dict(zip(("wait", "reads"), read_lines(ir))) for name, ir in variants().items()}
    order["attention_rope"] = dict(zip(("wait", "reads"), read_lines(attention(), ("Q",))))
    order.update({name: dict(zip(("wait", "reads"), read_lines(ir, sources)))
                  for name, (ir, sources) in wait_first().items()})
    json.dump(order, sys.stdout)
