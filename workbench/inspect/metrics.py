"""Error metrics between an engine tensor and its reference: the numbers one `wb diff` row shows.

Errors follow Polygraphy's comparator: absolute error |a - b| and relative error
|a - b| / |b|, where an exact zero in the reference is replaced by a tiny epsilon.

Non-finite values never hide an error. An element where either side is NaN, or where
one side is Inf and the other is not the same Inf, counts as an infinite absolute and
relative error (so max and mean become inf and the max points at it). Matching Infs
(same sign, same place) count as zero error, like Polygraphy's
`infinities_compare_equal=True`: masked attention scores are legitimately -inf.

In `to_dict`, non-finite floats become the strings "inf", "-inf" and "nan" (JSON has no
literal for them); `from_dict` turns them back, since `float("inf")` parses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from workbench.errors import WorkbenchError

# Polygraphy's stand-in for an exact zero in the reference when dividing for relative error.
REL_EPS = 2.220446049250313e-16


def float_to_json(x: float) -> float | str:
    """A float JSON can hold: finite values as they are, others as "inf", "-inf" or "nan"."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def float_from_json(v: float | str) -> float:
    """The inverse of `float_to_json`."""
    return float(v)


def _to_json(obj) -> dict:
    """A flat dataclass as a JSON-safe dict, driven by its field annotations."""
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.type == "float":
            out[f.name] = float_to_json(v)
        elif f.type == "tuple[int, ...]":
            out[f.name] = [int(i) for i in v]
        elif f.type == "TensorStats":
            out[f.name] = v.to_dict()
        else:
            out[f.name] = v
    return out


def _from_json(cls, d: dict):
    """The inverse of `_to_json`."""
    kwargs = {}
    for f in fields(cls):
        v = d[f.name]
        if f.type == "float":
            kwargs[f.name] = float_from_json(v)
        elif f.type == "int":
            kwargs[f.name] = int(v)
        elif f.type == "tuple[int, ...]":
            kwargs[f.name] = tuple(int(i) for i in v)
        elif f.type == "TensorStats":
            kwargs[f.name] = TensorStats.from_dict(v)
        else:
            kwargs[f.name] = v
    return cls(**kwargs)


@dataclass
class TensorStats:
    """Summary of one tensor's values, over its finite elements (NaN/Inf are counted apart)."""

    min: float
    max: float
    mean: float
    std: float  # population std (divides by n), as numpy's default
    absmax: float

    @classmethod
    def of(cls, x: torch.Tensor) -> TensorStats:
        """Stats of a float64 tensor's finite elements; all NaN when it has none."""
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            x = x[finite]
        if x.numel() == 0:
            nan = math.nan
            return cls(nan, nan, nan, nan, nan)
        return cls(
            min=float(x.min()),
            max=float(x.max()),
            mean=float(x.mean()),
            std=float(x.std(correction=0)),
            absmax=float(x.abs().max()),
        )

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite floats as strings)."""
        return _to_json(self)

    @classmethod
    def from_dict(cls, d: dict) -> TensorStats:
        """The inverse of `to_dict`."""
        return _from_json(cls, d)


@dataclass
class TensorMetrics:
    """How far an engine tensor is from its reference; `atol`, `rtol` and `quantile` are the
    settings `frac_outside` and the quantile errors were computed with."""

    name: str
    shape: tuple[int, ...]  # the reference's shape
    max_abs_err: float
    max_abs_index: tuple[int, ...]  # coordinate of the max abs error; () for an empty tensor
    max_rel_err: float
    mean_abs_err: float
    mean_rel_err: float
    median_abs_err: float
    median_rel_err: float
    quantile_abs_err: float
    quantile_rel_err: float
    rel_l2: float  # ||a-b|| / ||b||, over finite pairs; inf if any non-finite mismatch
    cosine: float  # over finite pairs; 1 when both are all zero, 0 when one is
    sqnr_db: float  # 10 log10(||b||^2 / ||a-b||^2); inf when identical, -inf on non-finite mismatch
    frac_outside: float  # share with |a-b| > atol and rel > rtol (Polygraphy's elementwise) or NaN/Inf mismatch
    nan_engine: int
    inf_engine: int
    nan_ref: int
    inf_ref: int
    inf_mismatch: int  # elements, neither NaN, where one side is Inf and the other not that Inf
    engine_stats: TensorStats
    ref_stats: TensorStats
    atol: float = 0.0
    rtol: float = 0.0
    quantile: float = 0.99

    @property
    def numel(self) -> int:
        """Number of elements compared."""
        return math.prod(self.shape)

    @property
    def n_outside(self) -> int:
        """Number of elements outside the tolerances `frac_outside` was computed with."""
        return round(self.frac_outside * self.numel)

    @property
    def has_nonfinite_problem(self) -> bool:
        """True when any NaN is present or the Infs of the two sides disagree."""
        return bool(self.nan_engine or self.nan_ref or self.inf_mismatch)

    def to_dict(self) -> dict:
        """JSON-safe dict: non-finite floats as "inf"/"-inf"/"nan", tuples as lists."""
        return _to_json(self)

    @classmethod
    def from_dict(cls, d: dict) -> TensorMetrics:
        """The inverse of `to_dict`."""
        return _from_json(cls, d)


def _as_f64(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    coords = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        coords.append(i)
    return tuple(reversed(coords))


def _quantiles(x: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    """Linear-interpolated quantiles (numpy's default method) of a 1-D NaN-free tensor; safe with inf.

    One partial sort (np.partition) finds every order statistic needed, several times
    faster than a full sort for the million-element tensors a logits diff compares.
    """
    n = x.numel()
    if n == 0:
        return [0.0 for _ in qs]
    spots = []
    for q in qs:
        pos = q * (n - 1)
        lo = math.floor(pos)
        spots.append((lo, min(lo + 1, n - 1), pos - lo))
    kth = sorted({k for lo, hi, _ in spots for k in (lo, hi)})
    part = np.partition(x.numpy(), kth)
    out = []
    for lo, hi, frac in spots:
        x_lo, x_hi = float(part[lo]), float(part[hi])
        # inf - inf would give NaN; equal ends need no interpolation anyway.
        out.append(x_lo if frac == 0 or x_lo == x_hi else x_lo + (x_hi - x_lo) * frac)
    return out


def _errors(a: torch.Tensor, b: torch.Tensor) -> tuple:
    """Elementwise abs and rel error (float64), the mask of finite pairs and the mask of
    non-finite mismatches (both None when everything is finite)."""
    abs_err = (a - b).abs()
    denom = b.abs()
    denom = torch.where(denom == 0, REL_EPS, denom)
    finite = torch.isfinite(a) & torch.isfinite(b)
    if bool(finite.all()):
        return abs_err, abs_err / denom, None, None
    same_inf = torch.isinf(a) & (a == b)
    bad = ~finite & ~same_inf
    abs_err = torch.where(same_inf, 0.0, abs_err)
    abs_err = torch.where(bad, math.inf, abs_err)
    rel_err = torch.where(bad, math.inf, abs_err / denom)
    return abs_err, rel_err, finite, bad


def compare_tensors(
    name: str, engine, reference, *, atol: float = 0.0, rtol: float = 0.0, quantile: float = 0.99
) -> TensorMetrics:
    """Error metrics of `engine` against `reference`, computed in float64 on the CPU.

    The engine tensor is reshaped to the reference's shape when the element counts match
    (engines often keep a flattened batch*seq dimension); otherwise WorkbenchError.
    """
    a, b = _as_f64(engine), _as_f64(reference)
    shape = tuple(b.shape)
    if a.numel() != b.numel():
        raise WorkbenchError(
            f"{name}: engine shape {tuple(a.shape)} and reference shape {shape} "
            f"hold different numbers of elements ({a.numel()} vs {b.numel()})"
        )
    if not 0.0 <= quantile <= 1.0:
        raise WorkbenchError(f"{name}: error quantile {quantile} is not in [0, 1]")
    a = a.reshape(shape)
    a_flat, b_flat = a.reshape(-1), b.reshape(-1)
    abs_err, rel_err, finite, bad = _errors(a_flat, b_flat)
    n = abs_err.numel()

    nan_a, nan_b = torch.isnan(a_flat), torch.isnan(b_flat)
    inf_a, inf_b = torch.isinf(a_flat), torch.isinf(b_flat)
    inf_mismatch = int(((inf_a | inf_b) & ~nan_a & ~nan_b & (a_flat != b_flat)).sum())

    # Norm-based metrics need finite values; non-finite mismatches are reported apart.
    af, bf = (a_flat, b_flat) if finite is None else (a_flat[finite], b_flat[finite])
    d = af - bf
    err_sq, ref_sq = float(d @ d), float(bf @ bf)
    eng_norm, ref_norm = math.sqrt(float(af @ af)), math.sqrt(ref_sq)
    n_nan_a, n_nan_b = int(nan_a.sum()), int(nan_b.sum())
    any_bad = bool(n_nan_a or n_nan_b or inf_mismatch)

    if any_bad or (ref_sq == 0 and err_sq > 0):
        rel_l2 = math.inf
    else:
        rel_l2 = 0.0 if err_sq == 0 else math.sqrt(err_sq) / ref_norm
    if any_bad:
        sqnr = -math.inf
    elif err_sq == 0:
        sqnr = math.inf
    else:
        sqnr = -math.inf if ref_sq == 0 else 10.0 * math.log10(ref_sq / err_sq)
    if n > 0 and af.numel() == 0:
        cosine = math.nan  # nothing finite to compare
    elif eng_norm == 0 and ref_norm == 0:
        cosine = 1.0
    elif eng_norm == 0 or ref_norm == 0:
        cosine = 0.0
    else:
        cosine = max(-1.0, min(1.0, float(af @ bf) / (eng_norm * ref_norm)))

    if n == 0:
        max_abs, max_index, max_rel, mean_abs, mean_rel, outside = 0.0, (), 0.0, 0.0, 0.0, 0.0
    else:
        flat = int(torch.argmax(abs_err))
        max_abs, max_index = float(abs_err[flat]), _unravel(flat, shape)
        max_rel = float(rel_err.max())
        mean_abs, mean_rel = float(abs_err.mean()), float(rel_err.mean())
        # Polygraphy's elementwise rule: an element fails only if it exceeds both tolerances.
        outside_mask = (abs_err > atol) & (rel_err > rtol)
        if bad is not None:
            outside_mask |= bad  # even under infinite tolerances
        outside = int(outside_mask.sum()) / n
    median_abs, quantile_abs = _quantiles(abs_err, (0.5, quantile))
    median_rel, quantile_rel = _quantiles(rel_err, (0.5, quantile))

    return TensorMetrics(
        name=name,
        shape=shape,
        max_abs_err=max_abs,
        max_abs_index=max_index,
        max_rel_err=max_rel,
        mean_abs_err=mean_abs,
        mean_rel_err=mean_rel,
        median_abs_err=median_abs,
        median_rel_err=median_rel,
        quantile_abs_err=quantile_abs,
        quantile_rel_err=quantile_rel,
        rel_l2=rel_l2,
        cosine=cosine,
        sqnr_db=sqnr,
        frac_outside=outside,
        nan_engine=n_nan_a,
        inf_engine=int(inf_a.sum()),
        nan_ref=n_nan_b,
        inf_ref=int(inf_b.sum()),
        inf_mismatch=inf_mismatch,
        engine_stats=TensorStats.of(a_flat),
        ref_stats=TensorStats.of(b_flat),
        atol=float(atol),
        rtol=float(rtol),
        quantile=float(quantile),
    )
