"""AWQ (Lin et al. 2023): activation-aware int4 W4A16. Per input channel j the weights are scaled
by s_j = mean|x_j|^r (normalised), with r chosen on a grid in [0, 1) to minimise the layer's
output error on calibration inputs; the activations are divided by s by the kernel (a `smooth`
operand, like TensorRT-LLM's pre_quant_scale) so canonical tensors keep their values.

r = 0 gives s = 1, plain round-to-nearest, so on the calibration rows the search never does
worse than RTN. Weight clipping search (AWQ's second step) is not done.
"""

from __future__ import annotations

import torch

from workbench.builder.network import Network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.int4_wo import check_groups, rtn, w4a16
from workbench.builder.quantization.rewrite import replace_linears, weight_of


def search_scales(w: torch.Tensor, x: torch.Tensor, x_absmean: torch.Tensor, group_size: int,
                  grid: int = 20) -> tuple[torch.Tensor, float, list[float]]:
    """The best s [K] for w [N, K] on input rows x [n, K]: (s, best ratio r, error per grid point)."""
    w = w.to(torch.float32)
    x = x.to(torch.float32)
    ref = x @ w.T
    best, best_s, best_r, errors = float("inf"), torch.ones(w.shape[1]), 0.0, []
    for k in range(grid):
        r = k / grid
        s = x_absmean.to(torch.float32).pow(r).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        wq = nq.fake_int4(w * s[None, :], group_size) / s[None, :]
        err = float((x @ wq.T - ref).pow(2).mean())
        errors.append(err)
        if err < best:
            best, best_s, best_r = err, s, r
    return best_s, best_r, errors


def quantize(net: Network, config: QuantConfig, targets: list[str], calib: Calibration) -> Network:
    """Replace each target linear by a w4a16 quant_linear with AWQ-scaled weights and a smooth operand."""
    out = {}
    for name in targets:
        w = weight_of(net, name).to(torch.float32)
        check_groups(name, w, config.group_size)
        stats = calib.inputs[name]
        s, _, _ = search_scales(w, stats.samples, stats.absmean, config.group_size, config.awq_grid)
        q, scales, zeros = rtn(w * s[None, :], config.group_size)
        out[name] = w4a16(q, scales, zeros, config.group_size, "awq", smooth=s)
    return replace_linears(net, out)
