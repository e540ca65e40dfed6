"""A close look at one compared tensor and at the generated tokens: the data behind the TUI's detail and tokens panes.

`tensor_view` summarises an engine tensor against its reference: value statistics of each
side, a histogram of the absolute error by decade, the worst coordinates, and the values
around the worst one along the last axis (the hidden or vocabulary axis, where a bad
channel or a shifted slice shows). `token_steps` reads each generation step's logits on
both sides and gives the greedy choices and their log-probabilities.

Errors follow `metrics.compare_tensors`: float64, NaN or a mismatched Inf is an infinite error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.errors import WorkbenchError
from workbench.inspect.metrics import REL_EPS, TensorStats


@dataclass
class SideStats:
    """One side's values: shape, statistics of the finite elements, and what is not finite."""

    shape: tuple[int, ...]
    stats: TensorStats
    nan: int
    inf: int
    zeros: int


@dataclass
class ErrorBin:
    """Elements whose absolute error falls in [lo, hi); `label` names the bin ("0", "1e-07", "inf/nan")."""

    label: str
    lo: float
    hi: float
    count: int


@dataclass
class Coordinate:
    """One element of both tensors and its error."""

    index: tuple[int, ...]
    engine: float
    reference: float
    abs_err: float
    rel_err: float


@dataclass
class TensorView:
    """What the detail pane shows of one name."""

    name: str
    engine: SideStats
    reference: SideStats
    histogram: list[ErrorBin]  # exact zeros first, then decades low to high, then non-finite
    worst: list[Coordinate]  # largest abs error first
    around: list[Coordinate]  # neighbours of worst[0] along the last axis, in index order
    around_axis: int  # the axis `around` walks (-1 as a positive index; 0 for 1-D)


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64)


def _side(x: torch.Tensor) -> SideStats:
    return SideStats(tuple(x.shape), TensorStats.of(x.reshape(-1)), int(torch.isnan(x).sum()),
                     int(torch.isinf(x).sum()), int((x == 0).sum()))


def _errors(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Abs and rel error like metrics.compare_tensors: matching Infs are 0, NaN or other non-finite pairs inf."""
    abs_err = (a - b).abs()
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not bool(finite.all()):
        same_inf = torch.isinf(a) & (a == b)
        abs_err = torch.where(same_inf, 0.0, abs_err)
        abs_err = torch.where(~finite & ~same_inf, math.inf, abs_err)
    denom = b.abs()
    denom = torch.where((denom == 0) | ~torch.isfinite(denom), REL_EPS, denom)
    return abs_err, abs_err / denom


def error_histogram(abs_err: torch.Tensor, max_bins: int = 12) -> list[ErrorBin]:
    """Counts of |error| per decade (at most `max_bins`, the lowest one absorbing smaller errors), exact zeros
    first and non-finite errors last."""
    err = abs_err.reshape(-1)
    zeros = int((err == 0).sum())
    nonfinite = int((~torch.isfinite(err)).sum())
    pos = err[(err > 0) & torch.isfinite(err)]
    bins = [ErrorBin("0", 0.0, 0.0, zeros)]
    if pos.numel():
        exps = torch.floor(torch.log10(pos)).to(torch.int64)
        hi_exp, min_exp = int(exps.max()), int(exps.min())
        lo_exp = max(min_exp, hi_exp - max_bins + 1)
        counts = torch.bincount(exps.clamp(min=lo_exp) - lo_exp, minlength=hi_exp - lo_exp + 1)
        for i, c in enumerate(counts.tolist()):
            e = lo_exp + i
            if i == 0 and min_exp < lo_exp:  # the lowest bin also holds everything smaller
                bins.append(ErrorBin(f"<1e{e + 1:+03d}", 0.0, 10.0 ** (e + 1), int(c)))
            else:
                bins.append(ErrorBin(f"1e{e:+03d}", 10.0 ** e, 10.0 ** (e + 1), int(c)))
    if nonfinite:
        bins.append(ErrorBin("inf/nan", math.inf, math.inf, nonfinite))
    return bins


def _coord(flat: int, shape: tuple[int, ...], a, b, abs_err, rel_err) -> Coordinate:
    index = []
    rest = flat
    for size in reversed(shape):
        rest, i = divmod(rest, size)
        index.append(i)
    return Coordinate(tuple(reversed(index)), float(a[flat]), float(b[flat]), float(abs_err[flat]),
                      float(rel_err[flat]))


def tensor_view(name: str, engine, reference, *, worst: int = 5, radius: int = 4, max_bins: int = 12) -> TensorView:
    """Statistics, error histogram, worst coordinates and the neighbourhood of the worst of engine vs reference."""
    a, b = _f64(engine), _f64(reference)
    if a.numel() != b.numel():
        raise WorkbenchError(f"{name}: engine shape {tuple(a.shape)} and reference shape {tuple(b.shape)} "
                             f"hold different numbers of elements ({a.numel()} vs {b.numel()})")
    shape = tuple(b.shape)
    a = a.reshape(shape)
    abs_err, rel_err = _errors(a, b)
    af, bf, ef, rf = a.reshape(-1), b.reshape(-1), abs_err.reshape(-1), rel_err.reshape(-1)
    top, around, axis = [], [], max(len(shape) - 1, 0)
    if ef.numel():
        k = min(worst, ef.numel())
        # stable order on ties: a descending sort keeps the lower flat index first
        order = torch.sort(ef, descending=True, stable=True).indices[:k]
        top = [_coord(int(i), shape, af, bf, ef, rf) for i in order]
        centre = top[0].index
        last = shape[-1] if shape else 1
        c = centre[-1] if centre else 0
        stride_base = int(order[0]) - c
        for j in range(max(0, c - radius), min(last, c + radius + 1)):
            around.append(_coord(stride_base + j, shape, af, bf, ef, rf))
    return TensorView(name=name, engine=_side(a), reference=_side(b), histogram=error_histogram(abs_err, max_bins),
                      worst=top, around=around, around_axis=axis)


@dataclass
class TokenStep:
    """One generation step: HF's greedy token, the engine's top-1 given the same prefix, and log-probabilities."""

    step: int
    hf_token: int
    engine_token: int
    hf_logprob: float  # HF's logprob of its own choice
    engine_logprob: float  # the engine's logprob of its own choice
    engine_logprob_of_hf: float  # the engine's logprob of HF's choice
    hf_logprob_of_engine: float  # HF's logprob of the engine's choice

    @property
    def matches(self) -> bool:
        return self.hf_token == self.engine_token


def token_steps(hf_logits: dict[int, torch.Tensor], engine_logits: dict[int, torch.Tensor]) -> list[TokenStep]:
    """Per step (in order), the choices read off the last row of each side's logits [positions, V]."""
    out = []
    for step in sorted(set(hf_logits) & set(engine_logits)):
        h = torch.log_softmax(_f64(hf_logits[step]).reshape(-1, hf_logits[step].shape[-1])[-1], dim=-1)
        e = torch.log_softmax(_f64(engine_logits[step]).reshape(-1, engine_logits[step].shape[-1])[-1], dim=-1)
        ht, et = int(h.argmax()), int(e.argmax())
        out.append(TokenStep(step, ht, et, float(h[ht]), float(e[et]), float(e[ht]), float(h[et])))
    return out


def first_token_divergence(steps: list[TokenStep]) -> TokenStep | None:
    """The first step whose choices differ, or None."""
    return next((s for s in steps if not s.matches), None)
