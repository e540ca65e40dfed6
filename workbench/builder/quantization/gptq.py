"""GPTQ (Frantar et al. 2022): int4 W4A16 weights chosen column by column to minimise the layer's
output error on calibration inputs, through the inverse Hessian H = X^T X / n.

Follows the reference algorithm: dead input channels zeroed, damping (a fraction of the mean
diagonal added to H), the Cholesky factor of H^-1, lazy batch updates (`block_size` columns are
quantized against a local copy, then the rest of W is updated once per block), and optional
act-order (columns in decreasing order of H's diagonal). With act-order the group scales and
zeros are computed up front on contiguous groups ("static groups"), so the stored layout is the
same as round-to-nearest's and the W4A16 kernel needs no permutation index.

Calibration is sequential, as in the paper: linears are quantized in graph order, and each
one's Hessian comes from the calibration tokens run through the network whose earlier linears
are already quantized (so a layer compensates for the error the layers before it made; within
a decoder layer o_proj sees the quantized qkv, down the quantized gate_up). One pass over the
calibration tokens does it (the graph runner's quantize_sequentially). `gptq_sequential=False`
takes every Hessian from the one calibration pass of the full-precision network instead.
"""

from __future__ import annotations

import contextlib

import torch

from workbench.builder.network import Network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.int4_wo import check_groups, w4a16
from workbench.builder.quantization.rewrite import QuantizedLinear, replace_linears, weight_of
from workbench.builder.quantization.runner import graph_runner
from workbench.errors import WorkbenchError


def gptq(w: torch.Tensor, hessian: torch.Tensor, group_size: int, *, act_order: bool = False, damp: float = 0.01,
         block_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize w [N, K] with Hessian [K, K]: (q uint8 [N, K], scales and zeros [N, ceil(K/g)])."""
    W = w.to(torch.float32).clone()
    H = hessian.to(torch.float32).clone()
    n_out, cols = W.shape
    groups = -(-cols // group_size)  # the last group may be shorter
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    scales = torch.zeros(n_out, groups)
    zeros = torch.zeros(n_out, groups)
    perm = torch.arange(cols)
    if act_order:
        for g in range(groups):  # static groups, from the weights before any update
            scales[:, g], zeros[:, g] = nq.int4_params(W[:, g * group_size:(g + 1) * group_size])
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    Q = torch.zeros(n_out, cols)
    with _one_thread():
        _column_loop(W, Hinv, Q, scales, zeros, perm, group_size, block_size, act_order)
    if act_order:
        Q = Q[:, torch.argsort(perm)]
    return Q.to(torch.uint8), scales, zeros


@contextlib.contextmanager
def _one_thread():
    """The column loop is thousands of small ops: on a CPU, intra-op threads only add synchronisation."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _column_loop(W, Hinv, Q, scales, zeros, perm, group_size: int, block_size: int, act_order: bool) -> None:
    """Quantize W's columns in order into Q, propagating each column's error through Hinv (in place)."""
    n_out, cols = W.shape
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = int(perm[col]) // group_size
            if not act_order and col % group_size == 0:
                # the group's params from the weights as updated so far (W1 holds this block's updates)
                block = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :group_size]
                scales[:, g], zeros[:, g] = nq.int4_params(block)
            w_col = W1[:, i]
            q = nq.quantize_int4_col(w_col, scales[:, g], zeros[:, g])
            Q[:, col] = q
            err = (w_col - (q - zeros[:, g]) * scales[:, g]) / Hinv1[i, i]
            W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1.0)  # W1[:, i:] -= err Hinv1[i, i:]^T
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]


def quantize(net: Network, config: QuantConfig, targets: list[str], calib: Calibration) -> Network:
    """Replace each target linear by a w4a16 quant_linear with GPTQ weights."""
    for name in targets:  # before any work: a layer that cannot be packed fails the build at once
        check_groups(name, weight_of(net, name), config.group_size)

    def one(name: str, hessian: torch.Tensor) -> QuantizedLinear:
        q, s, z = gptq(weight_of(net, name), hessian, config.group_size, act_order=config.act_order,
                       damp=config.gptq_damp, block_size=config.gptq_block_size)
        return w4a16(q, s, z, config.group_size, "gptq")

    if not config.gptq_sequential:
        return replace_linears(net, {name: one(name, calib.inputs[name].hessian) for name in targets})
    if not calib.sequences:
        raise WorkbenchError("gptq: sequential calibration needs the calibration token ids (Calibration.sequences)")
    return replace_linears(net, graph_runner().quantize_sequentially(net, calib.sequences, targets, one))
