"""INT4 weight-only (W4A16), round to nearest: asymmetric int4 per group of `group_size` input channels
(the last group of a layer may be shorter)."""

from __future__ import annotations

import torch

from workbench.builder.network import Network
from workbench.builder.quantization import numerics as nq
from workbench.builder.quantization.calibration import Calibration
from workbench.builder.quantization.config import QuantConfig
from workbench.builder.quantization.rewrite import QuantizedLinear, replace_linears, weight_of
from workbench.errors import WorkbenchError


def check_groups(name: str, w: torch.Tensor, group_size: int) -> None:
    """A clear error when a layer cannot be packed (two int4 per byte needs an even input width)."""
    if w.shape[1] % 2:
        raise WorkbenchError(f"{name}: {w.shape[1]} input channels is odd; int4 packs two per byte, exclude the layer")


def w4a16(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int, algorithm: str,
          smooth: torch.Tensor | None = None) -> QuantizedLinear:
    """The quant_linear of unpacked int4 values q [N, K] with per-group params [N, K/g]."""
    ops = {"qweight": nq.pack_int4(q), "scales": scales.to(torch.float32).contiguous(),
           "zeros": zeros.to(torch.uint8).contiguous()}
    if smooth is not None:
        ops["smooth"] = smooth.to(torch.float32).contiguous()
    return QuantizedLinear({"method": "w4a16", "algorithm": algorithm, "group_size": group_size}, ops)


def rtn(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest: (q uint8 [N, K], scales [N, K/g], zeros [N, K/g])."""
    w = w.to(torch.float32)
    scales, zeros = nq.int4_group_params(w, group_size)
    return nq.quantize_int4(w, scales, zeros, group_size), scales, zeros


def quantize(net: Network, config: QuantConfig, targets: list[str], calib: Calibration | None = None) -> Network:
    """Replace each target linear by a w4a16 quant_linear with round-to-nearest weights."""
    out = {}
    for name in targets:
        w = weight_of(net, name)
        check_groups(name, w, config.group_size)
        out[name] = w4a16(*rtn(w, config.group_size), config.group_size, "int4_wo")
    return replace_linears(net, out)
