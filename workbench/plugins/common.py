"""Helpers shared by the kernels: interpreter detection and dot precision."""

from __future__ import annotations

import os
import sys

import torch

# Without a GPU the kernels run in Triton's CPU interpreter (slow; for tests at small sizes). Triton
# reads the switch when a function is decorated, its own library's too, so it must be set before
# Triton is first imported.
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    if "triton" in sys.modules:
        raise RuntimeError("the Triton plugins need TRITON_INTERPRET=1 on a machine without CUDA, set before "
                           "Triton is first imported; set it in the environment")
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


def _fix_interpreter_scalars() -> None:
    """Triton 3.6's interpreter turns a scalar into an int with int(1-element array), which numpy >= 2.4
    refuses (triton-lang/triton#9171, fixed upstream by squeezing): loops with run-time bounds fail.
    Apply the same fix to the interpreter's tensor patching, once."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_squeezes_scalars", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._squeezes_scalars = True
    interpreter._patch_lang_tensor = patched


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """Whether a kernel must upcast dot operands: fp32 data (no tf32 rounding), or the interpreter
    (its bf16 dot is wrong in Triton 3.6)."""
    return dtype == torch.float32 or interpreting()


def pow2(n: int, least: int = 1) -> int:
    """The smallest power of two >= max(n, least)."""
    return max(triton.next_power_of_2(int(n)), least)


@triton.jit
def rounded(x, DT: tl.constexpr):
    """fp32 x rounded to the dtype DT (nearest, ties to even) and kept in fp32, as a torch op of dtype DT rounds
    its result. For bf16 this is done on the bits: a first H100 run showed `.to(bf16).to(fp32)` round trips
    not surviving compilation (18% of rope outputs off by one ulp), and the interpreter truncates instead."""
    if DT == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
        return bits.to(tl.float32, bitcast=True)
    elif DT == tl.float16:
        return x.to(tl.float16).to(tl.float32)
    else:
        return x


@triton.jit
def mma(a, b, FP32: tl.constexpr):
    """a @ b with fp32 accumulation; FP32 upcasts the operands and keeps full precision."""
    if FP32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def gdc_begin(USE_GDC: tl.constexpr):
    """With programmatic dependent launch: wait until the kernel before has finished (its writes visible),
    then let the next kernel launch into SMs this one leaves free. First in every kernel that uses it, so
    nothing is read or written before the wait."""
    if USE_GDC:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def gdc_wait(USE_GDC: tl.constexpr):
    """With programmatic dependent launch: wait until the kernel before has finished (its writes visible)."""
    if USE_GDC:
        tl.extra.cuda.gdc_wait()


@triton.jit
def gdc_wait_zero(USE_GDC: tl.constexpr):
    """gdc_wait, returning 0 from the wait's own instruction: reads of what the kernel before wrote add it to their
    offsets. Inside a software-pipelined loop Triton's scheduler places a wait wherever nothing depends on it (at the
    end of the first iteration, after its reads of x, or after the prologue's copies of x); the data dependence keeps
    every such read after the wait."""
    if USE_GDC:
        return tl.inline_asm_elementwise("griddepcontrol.wait; mov.b32 $0, 0;", "=r", [], dtype=tl.int32,
                                         is_pure=False, pack=1)
    else:
        return tl.full([], 0, tl.int32)


@triton.jit
def gdc_trigger(USE_GDC: tl.constexpr):
    """With programmatic dependent launch: the next kernel may launch once every program got here (or exited)."""
    if USE_GDC:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _pdl_probe(X, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    tl.store(X, tl.load(X) + 1)


_PDL: bool | None = None


def use_pdl() -> bool:
    """Whether the decode-step kernels launch with programmatic dependent launch: on Hopper and later GPUs,
    unless WB_PDL=0; the launch of each kernel then overlaps the end of the one before, which the decode step's
    hundreds of short kernels otherwise pay one by one. Probed once with a tiny kernel, off if that fails."""
    global _PDL
    if _PDL_OVERRIDE is False:
        return False
    if _PDL is None:
        if interpreting() or not torch.cuda.is_available() or os.environ.get("WB_PDL", "1") == "0" \
                or torch.cuda.get_device_capability()[0] < 9:
            _PDL = False
        elif torch.cuda.is_current_stream_capturing():
            return False  # the probe synchronizes: decide outside a capture
        else:
            try:
                x = torch.zeros(1, dtype=torch.int32, device="cuda")
                _pdl_probe[(1,)](x, USE_GDC=True, launch_pdl=True)
                _PDL = int(x.item()) == 1
            except Exception:  # an older Triton or driver: plain launches
                _PDL = False
    return _PDL


PDL_FAMILIES = {"gemv", "norm", "rope", "attention", "activation", "step"}  # kernels that launch with PDL
_PDL_OVERRIDE: bool | None = None  # set by `pdl_launches`


class pdl_launches:
    """Kernels launched inside the block use PDL if `enabled` (and the GPU has it), whatever use_pdl() says
    outside: how a decode graph is captured both ways to keep the faster (runtime.cuda_executor)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        global _PDL_OVERRIDE
        self.saved, _PDL_OVERRIDE = _PDL_OVERRIDE, self.enabled
        return self

    def __exit__(self, *exc):
        global _PDL_OVERRIDE
        _PDL_OVERRIDE = self.saved


def gdc(family: str) -> dict:
    """The launch options of a kernel with a USE_GDC parameter: PDL on where `use_pdl()` and its family is in
    PDL_FAMILIES (a switch for measuring which kernels gain from it)."""
    return {"USE_GDC": True, "launch_pdl": True} if use_pdl() and family in PDL_FAMILIES else {"USE_GDC": False}


if interpreting():
    _fix_interpreter_scalars()
