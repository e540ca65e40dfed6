"""The decode step's bookkeeping on the device, so a captured step needs no host work.

One int32 staging tensor [B, 3 + pages] holds per row: token id, position, valid (0 marks a
padding row of a batch-size bucket) and the block table. `decode_prologue` derives what the
step reads; `decode_advance` feeds the step's greedy tokens back in (next token, position + 1)
and records them, so steps can be replayed back to back with no host in the loop.
`greedy_advance` takes the logits instead and finds each row's argmax itself: one kernel finds
every chunk's maximum in parallel, the advance picks the first chunk holding the largest (torch's
argmax over a 128k vocabulary row runs as one block: 38 us of an 8B step on an H100).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench.plugins.common import gdc, gdc_begin, pow2

STAGING_COLUMNS = 3  # id, position, valid; the block table follows


@triton.jit
def _prologue(S, IDS, POS, LENS, SLOTS, B, ss, PAGE: tl.constexpr, BLOCK_B: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    b = tl.arange(0, BLOCK_B)
    m = b < B
    row = S + b * ss
    ids = tl.load(row, mask=m, other=0)
    pos = tl.load(row + 1, mask=m, other=0)
    valid = tl.load(row + 2, mask=m, other=0) != 0
    page = tl.load(row + 3 + pos // PAGE, mask=m & valid, other=0)
    tl.store(IDS + b, ids.to(tl.int64), mask=m)
    tl.store(POS + b, pos.to(tl.int64), mask=m)
    tl.store(LENS + b, tl.where(valid, pos + 1, 0), mask=m)
    tl.store(SLOTS + b, tl.where(valid, page.to(tl.int64) * PAGE + (pos % PAGE).to(tl.int64), -1), mask=m)


@triton.jit
def _chunk_max(L, PV, PI, V, sl, nch, CHUNK: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    c = tl.program_id(0)
    b = tl.program_id(1)
    offs = c * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(L + b.to(tl.int64) * sl + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
    x = tl.where(x != x, float("inf"), x)  # NaN counts as the largest, as in torch.argmax
    i = tl.argmax(x, 0, tie_break_left=True)
    tl.store(PV + b * nch + c, tl.max(x, 0))
    tl.store(PI + b * nch + c, c * CHUNK + i)


@triton.jit
def _advance(S, NEXT, PV, HIST, STEP, B, ss, sh, hist_len, nch, BLOCK_B: tl.constexpr, CHUNKS: tl.constexpr,
             ARGMAX: tl.constexpr, USE_GDC: tl.constexpr):
    gdc_begin(USE_GDC)
    b = tl.arange(0, BLOCK_B)
    m = b < B
    row = S + b * ss
    valid = (tl.load(row + 2, mask=m, other=0) != 0) & m
    if ARGMAX:  # NEXT: each chunk's argmax; the row's is that of the first chunk holding its largest value
        c = tl.arange(0, CHUNKS)
        pv = tl.load(PV + b[:, None] * nch + c[None, :], mask=m[:, None] & (c < nch)[None, :], other=float("-inf"))
        best = tl.argmax(pv, 1, tie_break_left=True)
        nxt = tl.load(NEXT + b * nch + best, mask=m, other=0).to(tl.int64)
    else:
        nxt = tl.load(NEXT + b, mask=m, other=0)
    pos = tl.load(row + 1, mask=m, other=0)
    step = tl.load(STEP)
    tl.store(row, nxt.to(tl.int32), mask=valid)
    tl.store(row + 1, pos + 1, mask=valid)
    tl.store(HIST + b * sh + step, nxt, mask=valid & (step < hist_len))
    tl.store(STEP, step + 1)


def decode_prologue(staging: torch.Tensor, page_size: int, ids: torch.Tensor, positions: torch.Tensor,
                    seq_lens: torch.Tensor, slots: torch.Tensor) -> None:
    """Fill ids, positions (int64), seq_lens (int32, 0 for padding) and KV slots (int64, -1 for padding)."""
    b = staging.shape[0]
    _prologue[(1,)](staging, ids, positions, seq_lens, slots, b, staging.stride(0), PAGE=page_size,
                    BLOCK_B=pow2(b), num_warps=1, **gdc("step"))


def decode_advance(staging: torch.Tensor, next_ids: torch.Tensor, history: torch.Tensor, step: torch.Tensor) -> None:
    """Valid rows: id <- next_ids, position += 1, history[:, step] <- next_ids; then step += 1."""
    b = staging.shape[0]
    _advance[(1,)](staging, next_ids, next_ids, history, step, b, staging.stride(0), history.stride(0),
                   history.shape[1], 1, BLOCK_B=pow2(b), CHUNKS=1, ARGMAX=False, num_warps=1, **gdc("step"))


ARGMAX_CHUNK = 1024


def greedy_advance(staging: torch.Tensor, logits: torch.Tensor, history: torch.Tensor, step: torch.Tensor) -> None:
    """decode_advance with next_ids = logits [B, V].argmax(-1) (the first largest; NaN counts as largest)."""
    b, v = logits.shape
    if b != staging.shape[0] or logits.stride(-1) != 1:
        raise ValueError(f"greedy_advance: logits {tuple(logits.shape)} for {staging.shape[0]} rows, or not row-major")
    nch = triton.cdiv(v, ARGMAX_CHUNK)
    pv = torch.empty(b, nch, dtype=torch.float32, device=logits.device)
    pi = torch.empty(b, nch, dtype=torch.int32, device=logits.device)
    _chunk_max[(nch, b)](logits, pv, pi, v, logits.stride(0), nch, CHUNK=ARGMAX_CHUNK, num_warps=4, **gdc("step"))
    _advance[(1,)](staging, pi, pv, history, step, b, staging.stride(0), history.stride(0), history.shape[1], nch,
                   BLOCK_B=pow2(b), CHUNKS=pow2(nch), ARGMAX=True, num_warps=4, **gdc("step"))


def decode_prologue_ref(staging, page_size, ids, positions, seq_lens, slots) -> None:
    """The same with torch."""
    s = staging.long()
    valid = s[:, 2] != 0
    pos = s[:, 1]
    page = s[:, 3:].gather(1, (pos // page_size).clamp(max=s.shape[1] - 4)[:, None])[:, 0]
    ids.copy_(s[:, 0])
    positions.copy_(pos)
    seq_lens.copy_(torch.where(valid, pos + 1, 0).to(seq_lens.dtype))
    slots.copy_(torch.where(valid, page * page_size + pos % page_size, -1))


def greedy_advance_ref(staging, logits, history, step) -> None:
    """decode_advance_ref of torch's argmax."""
    decode_advance_ref(staging, logits.argmax(-1), history, step)


def decode_advance_ref(staging, next_ids, history, step) -> None:
    """The same with torch."""
    valid = staging[:, 2] != 0
    i = int(step)
    staging[:, 0] = torch.where(valid, next_ids.to(staging.dtype), staging[:, 0])
    staging[:, 1] += valid.to(staging.dtype)
    if i < history.shape[1]:
        history[:, i] = torch.where(valid, next_ids, history[:, i])
    step += 1
