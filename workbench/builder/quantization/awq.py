"""AWQ (Lin et al. 2023): activation-aware int4 W4A16. Per input channel j the weights are scaled
by s_j = mean|x_j|^r (normalised), with r chosen on a grid in [0, 1) to minimise the layer's
output error on calibration inputs; the activations are divided by s by the kernel (a `smooth`
operand, like TensorRT-LLM's pre_quant_scale) so canonical tensors keep their values.

r = 0 gives s = 1, plain round-to-nearest, so on the calibration rows the search never does
worse than RTN.

Then (AWQ's second step, `awq_clip`) the int4 range of every output channel's group is shrunk
by the ratio in 1.0, 0.95, ..., 0.5 that minimises that group's share of the output error on
the same rows (scaled weights, scaled inputs); weights past the narrowed range saturate. Ratio
1.0 is the unclipped range, so per group the search again never does worse than without it.
"""

from __future__ import annotations

import torch

from workbench.builder.network import Network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.int4_wo import check_groups, w4a16
from workbench.builder.quantization.rewrite import QuantizedLinear, replace_linears, weight_of

CLIP_RATIOS = tuple(1.0 - 0.05 * i for i in range(11))  # 1.0 down to 0.5: how far each group's int4 range shrinks


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


def search_clip(w: torch.Tensor, x: torch.Tensor, group_size: int,
                ratios: tuple[float, ...] = CLIP_RATIOS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel and group of w [N, K], the best range shrink on input rows x [n, K].

    Returns (shrink [N, G], squared output error per group [len(ratios), N, G]); each group is
    judged by its own share of the output, x[:, group] @ w[:, group]^T, as AWQ does.
    """
    w = w.to(torch.float32)
    x = x.to(torch.float32)
    n_out, cols = w.shape
    starts = range(0, cols, group_size)
    errors = torch.zeros(len(ratios), n_out, len(starts))
    for g, start in enumerate(starts):
        wg, xg = w[:, start:start + group_size], x[:, start:start + group_size]
        ref = xg @ wg.T  # [n, N]
        for i, r in enumerate(ratios):
            scale, zero = nq.int4_params(wg, torch.full((n_out,), r))
            wq = (nq.quantize_int4_col(wg, scale[:, None], zero[:, None]) - zero[:, None]) * scale[:, None]
            errors[i, :, g] = (xg @ wq.T - ref).pow(2).mean(0)
    best = errors.argmin(0)  # [N, G]; ties go to the first ratio, the widest range
    return torch.tensor(ratios)[best], errors


def quantize_layer(w: torch.Tensor, x: torch.Tensor, x_absmean: torch.Tensor, config: QuantConfig) -> QuantizedLinear:
    """One linear's w4a16 operands from its weight [N, K] and calibration input rows x [n, K]."""
    w = w.to(torch.float32)
    s, _, _ = search_scales(w, x, x_absmean, config.group_size, config.awq_grid)
    ws = w * s[None, :]
    shrink = search_clip(ws, x.to(torch.float32) / s[None, :], config.group_size)[0] if config.awq_clip else None
    scales, zeros = nq.int4_group_params(ws, config.group_size, shrink)
    q = nq.quantize_int4(ws, scales, zeros, config.group_size)
    return w4a16(q, scales, zeros, config.group_size, "awq", smooth=s)


def quantize(net: Network, config: QuantConfig, targets: list[str], calib: Calibration) -> Network:
    """Replace each target linear by a w4a16 quant_linear with AWQ-scaled (and clipped) weights and a smooth operand."""
    out = {}
    for name in targets:
        w = weight_of(net, name)
        check_groups(name, w, config.group_size)
        stats = calib.inputs[name]
        out[name] = quantize_layer(w, stats.samples, stats.absmean, config)
    return replace_linears(net, out)
