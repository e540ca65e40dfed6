"""Every plugin kernel against its torch reference, on small sizes (CPU interpreter or GPU)."""

from __future__ import annotations

import pytest
import torch

from tests.plugins.conftest import TOL, assert_same, rel_err

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _packed(lengths, hq, hkv, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = sum(lengths)
    # q, k, v as views into one fused projection, as the engine hands them over
    qkv = torch.randn(t, (hq + 2 * hkv) * d, generator=g).to(dtype).to(DEV)
    q = qkv[:, : hq * d].view(t, hq, d)
    k = qkv[:, hq * d:(hq + hkv) * d].view(t, hkv, d)
    v = qkv[:, (hq + hkv) * d:].view(t, hkv, d)
    cu = torch.tensor([0] + lengths, dtype=torch.int32).cumsum(0).to(torch.int32).to(DEV)
    return q, k, v, cu


@pytest.mark.parametrize("hq,hkv,d,dtype,window", [
    (4, 2, 16, torch.float32, None),   # GQA
    (4, 1, 16, torch.bfloat16, None),  # MQA
    (2, 2, 20, torch.float16, None),   # MHA, head dim not a power of two (as 80 is)
    (4, 2, 16, torch.bfloat16, 5),     # sliding window
])
def test_flash_attention(hq, hkv, d, dtype, window):
    from workbench.plugins.flash_attention import flash_attention, flash_attention_ref

    lengths = [37, 1, 16, 9]
    q, k, v, cu = _packed(lengths, hq, hkv, d, dtype)
    out = flash_attention(q, k, v, cu, max(lengths), scale=d ** -0.5, window=window)
    ref = flash_attention_ref(q, k, v, cu, max(lengths), scale=d ** -0.5, window=window)
    assert out.dtype == dtype
    assert rel_err(out, ref) < TOL[dtype]


def _paged_cache(lengths, hkv, d, dtype, page=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    pages = [-(-n // page) for n in lengths]
    num_blocks = sum(pages) + 3
    kv = torch.randn(num_blocks, 2, page, hkv, d, generator=g).to(dtype).to(DEV)
    perm = torch.randperm(num_blocks, generator=g).tolist()  # pages scattered, out of order
    tables = torch.zeros(len(lengths), max(pages), dtype=torch.int32)
    at = 0
    for b, p in enumerate(pages):
        tables[b, :p] = torch.tensor(perm[at:at + p])
        at += p
    return kv, tables.to(DEV)


@pytest.mark.parametrize("hq,hkv,d,dtype,window,parts", [
    (4, 2, 16, torch.float32, None, None),
    (8, 1, 16, torch.bfloat16, None, (16, 4)),  # MQA, split into partitions
    (4, 4, 20, torch.float16, None, (32, 2)),
    (4, 2, 16, torch.bfloat16, 6, (16, 4)),     # sliding window across partitions
])
@pytest.mark.parametrize("fused_merge", [True, False])  # partitions merged by the last programs, or by a kernel
def test_paged_decode_attention(hq, hkv, d, dtype, window, parts, fused_merge):
    from workbench.plugins.paged_attention import _COUNTERS, paged_decode_attention, paged_decode_attention_ref

    lengths = [1, 23, 64, 0, 9]  # 0: a padding row
    kv, tables = _paged_cache(lengths, hkv, d, dtype)
    q = torch.randn(len(lengths), hq, d).to(dtype).to(DEV)
    seq_lens = torch.tensor(lengths, dtype=torch.int32, device=DEV)
    kw = dict(part=parts[0], num_parts=parts[1]) if parts else {}
    for _ in range(2):  # the merge's counters are zero again after a launch
        out = paged_decode_attention(q, kv, tables, seq_lens, d ** -0.5, window, fused_merge=fused_merge, **kw)
        ref = paged_decode_attention_ref(q, kv, tables, seq_lens, d ** -0.5, window)
        assert rel_err(out, ref) < TOL[dtype]
        assert (out[3] == 0).all()
    if parts and fused_merge:
        assert not _COUNTERS[q.device].any()


@pytest.mark.parametrize("rope", [False, True])
def test_paged_decode_attention_ignores_what_lies_past_each_sequence(rope):
    # the key/value loads are bounded by the table's capacity, not by each sequence's length: NaN in every slot
    # past a sequence (its last page's tail, pages its table pads with block 0, unused blocks) changes nothing
    from workbench.plugins.paged_attention import (paged_decode_attention, paged_decode_attention_ref,
                                                   paged_decode_attention_rope, paged_decode_attention_rope_ref)
    from workbench.plugins.rotary import rope_table

    hq, hkv, d, page, dtype = 4, 2, 16, 4, torch.bfloat16
    lengths = [1, 23, 0, 9]
    kv, tables = _paged_cache(lengths, hkv, d, dtype, page=page)
    used = torch.zeros(kv.shape[0], page, dtype=torch.bool)
    for b, n in enumerate(lengths):
        for i in range(n):
            used[int(tables[b, i // page]), i % page] = True
    kv.permute(0, 2, 1, 3, 4)[~used.to(DEV)] = float("nan")  # [blocks, page, 2, Hkv, D] at the unused slots
    seq_lens = torch.tensor(lengths, dtype=torch.int32, device=DEV)
    kw = dict(part=16, num_parts=4)
    if rope:
        qkv = torch.randn(len(lengths), (hq + 2 * hkv) * d).to(dtype).to(DEV)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
        cos, sin = rope_table(inv_freq.to(DEV), 80, 1.0, dtype)
        pos = torch.tensor([max(n - 1, 0) for n in lengths], device=DEV)
        slots = torch.tensor([int(tables[b, (n - 1) // page]) * page + (n - 1) % page if n else -1
                              for b, n in enumerate(lengths)], device=DEV)
        ref = paged_decode_attention_rope_ref(qkv, hq, cos, sin, pos, slots, kv.clone(), tables, seq_lens, d ** -0.5)
        out = paged_decode_attention_rope(qkv, hq, cos, sin, pos, slots, kv, tables, seq_lens, d ** -0.5, **kw)
    else:
        q = torch.randn(len(lengths), hq, d).to(dtype).to(DEV)
        ref = paged_decode_attention_ref(q, kv, tables, seq_lens, d ** -0.5)
        out = paged_decode_attention(q, kv, tables, seq_lens, d ** -0.5, **kw)
    assert torch.isfinite(out).all() and torch.isfinite(ref).all()
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("hq,hkv,d,dtype,window,parts", [
    (4, 2, 16, torch.float32, None, None),
    (8, 1, 16, torch.bfloat16, None, (16, 4)),  # MQA; the new token in various partitions
    (4, 4, 20, torch.float16, None, (32, 2)),
    (4, 2, 16, torch.bfloat16, 6, (16, 4)),
])
def test_paged_decode_attention_rope_is_rope_qkv_then_attention(hq, hkv, d, dtype, window, parts):
    from workbench.plugins.paged_attention import (paged_decode_attention, paged_decode_attention_rope,
                                                   paged_decode_attention_rope_ref)
    from workbench.plugins.rotary import rope_qkv, rope_table

    lengths = [1, 23, 64, 0, 9, 17]  # 0: a padding row
    page = 4
    kv, tables = _paged_cache(lengths, hkv, d, dtype, page=page)
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(len(lengths), (hq + 2 * hkv) * d, generator=g).to(dtype).to(DEV)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    cos, sin = rope_table(inv_freq.to(DEV), 80, 1.0, dtype)
    pos = torch.tensor([max(n - 1, 0) for n in lengths], device=DEV)
    slots = torch.tensor([int(tables[b, (n - 1) // page]) * page + (n - 1) % page if n else -1
                          for b, n in enumerate(lengths)], device=DEV)
    seq_lens = torch.tensor(lengths, dtype=torch.int32, device=DEV)
    kw = dict(part=parts[0], num_parts=parts[1]) if parts else {}
    a, b, c = kv.clone(), kv.clone(), kv.clone()
    fused = paged_decode_attention_rope(qkv, hq, cos, sin, pos, slots, a, tables, seq_lens, d ** -0.5, window, **kw)
    q, k = rope_qkv(qkv, hq, hkv, d, cos, sin, pos, b, slots)
    apart = paged_decode_attention(q, b, tables, seq_lens, d ** -0.5, window, **kw)
    ref = paged_decode_attention_rope_ref(qkv, hq, cos, sin, pos, slots, c, tables, seq_lens, d ** -0.5, window)
    assert rel_err(fused, ref) < TOL[dtype] and (fused[3] == 0).all()
    if DEV == "cuda" and dtype != torch.bfloat16:  # fused multiply-adds may differ between the two kernels
        bound = 4 * torch.finfo(dtype).eps * qkv.abs().max().item()
        assert (a.float() - b.float()).abs().max().item() <= bound
        assert rel_err(fused, apart) < TOL[dtype]
        return
    assert_same(a, b)  # the cache holds the same rotated keys and values
    assert_same(fused, apart)


def test_decode_attention_triggers_the_next_kernel_first_where_a_block_follows(monkeypatch):
    from workbench.plugins import paged_attention as pa

    assert pa.trigger_first(True, 1) and not pa.trigger_first(True, 8) and not pa.trigger_first(False, 1)
    monkeypatch.setattr(pa, "TRIGGER", "wait")
    assert not pa.trigger_first(True, 1)
    code = """
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from workbench.plugins import paged_attention as pa
fn, out = pa._paged_decode, []
types = dict({n: '*bf16' for n in ('Q', 'KV', 'O', 'COS', 'SIN')}, PACC='*fp32', PML='*fp32', CNT='*i32', TR='*i64',
             block_tables='*i32', seq_lens='*i32', POS='*i32', SLOTS='*i64', scale_log2='fp32')
types.update({n: 'i32' for n in ('sqb', 'sqh', 's_cos', 's_blk', 's_kv', 's_pg', 's_h', 'sbt', 'cap', 'sob', 'soh',
                                 'window')})
for first in (False, True):
    consts = dict(REP=4, REP_PAD=16, D=64, D_PAD=64, PAGE=64, BLOCK_N=32, PART=32, NUM_PARTS=16, WINDOW=False,
                  FP32=False, ROPE=True, MERGE=True, FIRST=first, USE_GDC=True)
    src = ASTSource(fn=fn, signature={n: types.get(n, 'constexpr') for n in fn.arg_names},
                    constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    ptx = triton.compile(src, target=GPUTarget('cuda', 90, 32), options={'num_warps': 4}).asm['ptx']
    out.append([ptx.count('griddepcontrol.wait'), ptx.index('launch_dependents') < ptx.index('griddepcontrol.wait')])
print(json.dumps(out))
"""
    from tests.compile_on_cpu import compiled_report

    assert compiled_report(code) == [[1, False], [1, True]]


def test_write_kv():
    from workbench.plugins.paged_attention import write_kv, write_kv_ref

    kv, _ = _paged_cache([8, 8], 2, 16, torch.bfloat16)
    k = torch.randn(5, 2, 16).to(torch.bfloat16).to(DEV)
    v = torch.randn(5, 2, 16).to(torch.bfloat16).to(DEV)
    slots = torch.tensor([0, 7, -1, 13, 2], device=DEV)
    a, b = kv.clone(), kv.clone()
    write_kv(a, slots, k, v)
    write_kv_ref(b, slots, k, v)
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm(dtype, residual):
    from workbench.plugins.rms_norm import add_rms_norm, add_rms_norm_ref, rms_norm, rms_norm_ref

    x = torch.randn(7, 80).to(dtype).to(DEV)
    r = torch.randn(7, 80).to(dtype).to(DEV)
    w = (1 + 0.3 * torch.randn(80)).to(dtype).to(DEV)
    if residual:
        s, y = add_rms_norm(x, r, w, 1e-5)
        s_ref, y_ref = add_rms_norm_ref(x, r, w, 1e-5)
        assert_same(s, s_ref)
    else:
        y, y_ref = rms_norm(x, w, 1e-5), rms_norm_ref(x, w, 1e-5)
    # one rounding of the normalised row at most: the reduction order differs
    assert rel_err(y, y_ref) < (1e-6 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("d", [16, 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rope_qkv_matches_reference_and_writes_cache(d, dtype):
    from workbench.plugins.rotary import rope, rope_qkv, rope_qkv_ref, rope_ref, rope_table

    hq, hkv, t = 4, 2, 6
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    cos, sin = rope_table(inv_freq.to(DEV), 64, 1.0, dtype)
    qkv = torch.randn(t, (hq + 2 * hkv) * d).to(dtype).to(DEV)
    pos = torch.tensor([0, 5, 63, 2, 2, 17], device=DEV)
    kv, _ = _paged_cache([12, 12], hkv, d, dtype)
    slots = torch.tensor([0, 1, 2, -1, 9, 11], device=DEV)
    a, b = kv.clone(), kv.clone()
    q, k = rope_qkv(qkv, hq, hkv, d, cos, sin, pos, a, slots)
    q_ref, k_ref = rope_qkv_ref(qkv, hq, hkv, d, cos, sin, pos, b, slots)
    x = qkv[:, : hq * d].view(t, hq, d)
    pairs = [(q, q_ref), (k, k_ref), (a, b), (rope(x, cos, sin, pos), rope_ref(x, cos, sin, pos))]
    if DEV == "cuda" and dtype != torch.bfloat16:
        # the GPU contracts x * cos + r * sin into one fused multiply-add, which rounds once where torch rounds
        # after each product: fp32 and fp16 results differ by a few ulps of the products, which may be larger
        # than the result when they cancel (bf16's explicit roundings stay exact)
        bound = 4 * torch.finfo(dtype).eps * qkv.abs().max().item()
        for got, ref in pairs:
            assert (got.float() - ref.float()).abs().max().item() <= bound
        return
    for got, ref in pairs:  # the same roundings as the reference: bit for bit
        assert_same(got, ref)


def test_rope_table_matches_reference_backend():
    from workbench.builder.network import Node
    from workbench.plugins.rotary import rope_ref, rope_table
    from workbench.runtime import torch_ops

    d = 16
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    x = torch.randn(5, 3, d).to(torch.bfloat16)
    pos = torch.tensor([0, 3, 9, 30, 31])
    cos, sin = rope_table(inv_freq, 32, 0.7, torch.bfloat16)
    node = Node("r", "rope", [], {"attention_scaling": 0.7}, "bfloat16", [])
    assert torch.equal(rope_ref(x, cos, sin, pos), torch_ops.rope(node, [x, pos, inv_freq], None))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_and_mul(dtype):
    from workbench.plugins.activation import silu_and_mul, silu_and_mul_ref

    x = (2 * torch.randn(5, 2 * 72)).to(dtype).to(DEV)
    tol = 1e-6 if dtype == torch.float32 else 5e-3  # exp may differ in the last bit, then one rounding
    assert rel_err(silu_and_mul(x), silu_and_mul_ref(x)) < tol


@pytest.mark.parametrize("m,split,bias", [(1, 1, False), (3, 2, True), (16, 3, False)])
def test_gemv(m, split, bias):
    from workbench.plugins.gemv import gemv, gemv_ref

    x = torch.randn(m, 96).to(torch.bfloat16).to(DEV)
    w = torch.randn(40, 96).to(torch.bfloat16).to(DEV)
    b = torch.randn(40).to(torch.bfloat16).to(DEV) if bias else None
    y = gemv(x, w, b, config=(16, 32, split, 4, 1))
    assert rel_err(y, gemv_ref(x, w, b)) < 8e-3


def test_decode_prologue_and_advance():
    from workbench.plugins.decode_step import decode_advance, decode_advance_ref, decode_prologue, decode_prologue_ref

    page = 4
    staging = torch.zeros(3, 3 + 5, dtype=torch.int32)
    staging[0, :3] = torch.tensor([11, 6, 1])
    staging[0, 3:] = torch.tensor([7, 2, 9, 0, 0])
    staging[1, :3] = torch.tensor([5, 0, 1])
    staging[1, 3:] = torch.tensor([4, 0, 0, 0, 0])
    staging[2, :3] = torch.tensor([0, 0, 0])  # padding row
    staging = staging.to(DEV)
    outs = [[torch.empty(3, dtype=dt, device=DEV) for dt in (torch.int64, torch.int64, torch.int32, torch.int64)]
            for _ in range(2)]
    decode_prologue(staging, page, *outs[0])
    decode_prologue_ref(staging, page, *outs[1])
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    assert outs[0][3].tolist() == [2 * page + 2, 4 * page + 0, -1]
    nxt = torch.tensor([3, 4, 5], device=DEV)
    runs = []
    for fn in (decode_advance, decode_advance_ref):
        s, hist, step = staging.clone(), torch.zeros(3, 4, dtype=torch.int64, device=DEV), torch.zeros(1, dtype=torch.int64, device=DEV)
        fn(s, nxt, hist, step)
        fn(s, nxt + 1, hist, step)
        runs.append((s, hist, step))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert runs[0][1][:, :2].tolist() == [[3, 4], [4, 5], [0, 0]]


@pytest.mark.parametrize("vocab", [50, 3000])
def test_greedy_advance_is_decode_advance_of_the_argmax(vocab):
    from workbench.plugins.decode_step import greedy_advance, greedy_advance_ref

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, vocab, generator=g).to(torch.bfloat16)
    logits[1, 7] = logits[1, vocab - 3] = 100.0  # a tie: the first index wins
    logits[2, vocab - 1] = 50.0  # the last chunk's last column
    logits[3, :] = -5.0
    logits[3, 2000 % vocab] = float("nan")  # NaN counts as the largest, as in torch.argmax
    staging = torch.zeros(4, 3 + 2, dtype=torch.int32)
    staging[:, 2] = torch.tensor([1, 1, 1, 1], dtype=torch.int32)
    staging[:, 1] = torch.tensor([3, 0, 5, 1], dtype=torch.int32)
    runs = []
    for fn in (greedy_advance, greedy_advance_ref):
        s, hist, step = staging.clone().to(DEV), torch.zeros(4, 3, dtype=torch.int64, device=DEV), \
            torch.zeros(1, dtype=torch.int64, device=DEV)
        fn(s, logits.to(DEV), hist, step)
        runs.append((s, hist, step))
    for a, b in zip(*runs):
        assert torch.equal(a.cpu(), b.cpu())
    assert runs[0][1][:, 0].tolist() == logits.float().argmax(-1).tolist()
    assert runs[0][1][1, 0] == 7 and runs[0][1][2, 0] == vocab - 1
