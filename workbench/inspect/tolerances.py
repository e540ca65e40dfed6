"""Tolerances per name and the pass/fail judgement of one compared tensor, after Polygraphy.

Grammar of `--atol` / `--rtol` items (Polygraphy's `--atol 1e-3 out:1e-2`, with layer
patterns instead of exact output names): `VALUE` sets the default, `PATTERN:VALUE` sets
the value for the names a pattern selects (`layers.*.mlp:1e-2`, `12.attn:0.1`,
`3-7.mlp,logits:1e-2`). An empty pattern (`:1e-3`) is the default too, as Polygraphy's
`""` key. Unset defaults are Polygraphy's: atol 1e-5, rtol 1e-5.

Judging follows Polygraphy's `CompareFunc.simple`:
- `elementwise`: an element mismatches when |a-b| > atol AND rel > rtol; any mismatch fails.
  (Stricter than numpy's isclose, |a-b| <= atol + rtol*|b|, when both tolerances are set.)
- `max` / `mean` / `median` / `quantile`: that statistic of the abs error and of the rel
  error; fails when the abs statistic > atol AND the rel statistic > rtol (NaN counts as over).
Beyond Polygraphy: any NaN, or Infs that disagree, fail regardless of the statistic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from workbench.errors import PatternError, WorkbenchError
from workbench.inspect.metrics import TensorMetrics, compare_tensors, float_from_json, float_to_json
from workbench.names import match

ERROR_STATS = ("elementwise", "max", "mean", "median", "quantile")
_STAT_ALIASES = {"elemwise": "elementwise"}  # Polygraphy's spelling
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
DEFAULT_QUANTILE = 0.99


def _parse_items(items: list[str] | str | None, flag: str, default: float) -> dict[str, float]:
    """`["1e-3", "*.mlp:1e-2"]` -> `{"": 1e-3, "*.mlp": 1e-2}`; later items move to the end."""
    if isinstance(items, str):
        items = [items]
    table = {"": default}
    for item in items or []:
        pattern, _, text = str(item).strip().rpartition(":")
        try:
            value = float(text)
        except ValueError:
            raise WorkbenchError(
                f"{flag} {item!r}: {text.strip()!r} is not a number; "
                "use VALUE or PATTERN:VALUE, e.g. 1e-3 or layers.*.mlp:1e-2"
            ) from None
        if math.isnan(value) or value < 0:
            raise WorkbenchError(f"{flag} {item!r}: a tolerance must be a number >= 0")
        patterns = [p.strip() for p in pattern.split(",") if p.strip()] or [""]
        for p in patterns:
            if p:
                try:
                    match([p], [], strict=False)  # syntax only: an empty range raises here
                except PatternError as err:
                    raise WorkbenchError(f"{flag} {item!r}: {err}") from None
            table.pop(p, None)  # re-insert so that the later item wins ties
            table[p] = value
    return table


def _normalise(pattern: str) -> str:
    p = pattern.strip()
    return "layers." + p if re.match(r"^\d", p) else p


def _specificity(pattern: str, name: str) -> tuple[int, int] | None:
    """How narrowly `pattern` selects `name` (higher wins), or None when it does not select it.

    Ranks: an exact name 3, a layer range 2, a glob 1 (then more literal characters win), `all` 0.
    """
    if not match([pattern], [name], strict=False):
        return None
    p = _normalise(pattern)
    if p == "all":
        return (0, 0)
    if any(c in p for c in "*?["):
        literal = re.sub(r"\[[^\]]*\]|[*?]", "", p)
        return (1, len(literal))
    return (3, len(p)) if p == name else (2, len(p))


def _lookup(table: dict[str, float], name: str, default: float) -> float:
    best_key, best = None, table.get("", default)
    for index, (pattern, value) in enumerate(table.items()):
        if not pattern:
            continue
        spec = _specificity(pattern, name)
        if spec is not None and (best_key is None or (spec, index) > best_key):
            best_key, best = (spec, index), value
    return best


@dataclass
class Tolerances:
    """Per-name atol/rtol (`""` holds the default) and the error statistic they are checked on."""

    atol: dict[str, float] = field(default_factory=lambda: {"": DEFAULT_ATOL})
    rtol: dict[str, float] = field(default_factory=lambda: {"": DEFAULT_RTOL})
    error_stat: str = "elementwise"
    quantile: float = DEFAULT_QUANTILE

    @classmethod
    def parse(
        cls,
        atol: list[str] | None,
        rtol: list[str] | None,
        error_stat: str = "elementwise",
        quantile: float = DEFAULT_QUANTILE,
    ) -> Tolerances:
        """Tolerances from the `--atol`, `--rtol`, `--error-stat`, `--error-quantile` arguments."""
        stat = _STAT_ALIASES.get(str(error_stat).strip(), str(error_stat).strip())
        if stat not in ERROR_STATS:
            raise WorkbenchError(f"--error-stat {error_stat!r}: choose one of {', '.join(ERROR_STATS)}")
        try:
            q = float(quantile)
        except (TypeError, ValueError):
            q = math.nan
        if not 0.0 <= q <= 1.0:
            raise WorkbenchError(f"--error-quantile {quantile!r}: must be a number in [0, 1]")
        return cls(
            atol=_parse_items(atol, "--atol", DEFAULT_ATOL),
            rtol=_parse_items(rtol, "--rtol", DEFAULT_RTOL),
            error_stat=stat,
            quantile=q,
        )

    def for_name(self, name: str) -> tuple[float, float]:
        """(atol, rtol) for a name: the most specific matching pattern, later items winning ties."""
        return _lookup(self.atol, name, DEFAULT_ATOL), _lookup(self.rtol, name, DEFAULT_RTOL)

    def check_patterns(self, names) -> None:
        """Raise PatternError (with close names) for a pattern that selects none of `names`."""
        names = list(names)
        for flag, table in (("--atol", self.atol), ("--rtol", self.rtol)):
            for pattern in table:
                if pattern:
                    try:
                        match([pattern], names, strict=True)
                    except PatternError as err:
                        raise PatternError(f"{flag}: {err}") from None

    def to_dict(self) -> dict:
        """JSON-safe dict; pattern order is kept (it breaks ties)."""
        return {
            "atol": {p: float_to_json(v) for p, v in self.atol.items()},
            "rtol": {p: float_to_json(v) for p, v in self.rtol.items()},
            "error_stat": self.error_stat,
            "quantile": self.quantile,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Tolerances:
        """The inverse of `to_dict`."""
        return cls(
            atol={p: float_from_json(v) for p, v in d["atol"].items()},
            rtol={p: float_from_json(v) for p, v in d["rtol"].items()},
            error_stat=d["error_stat"],
            quantile=float(d["quantile"]),
        )


@dataclass
class Verdict:
    """Whether one tensor passed, the statistic values checked, and why, in a short phrase."""

    name: str
    passed: bool
    atol: float
    rtol: float
    stat_value_abs: float  # for elementwise: the max abs error (Polygraphy's required atol)
    stat_value_rel: float
    reason: str
    error_stat: str = "elementwise"

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite floats as strings)."""
        d = dict(vars(self))
        for k in ("atol", "rtol", "stat_value_abs", "stat_value_rel"):
            d[k] = float_to_json(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Verdict:
        """The inverse of `to_dict`."""
        d = dict(d)
        for k in ("atol", "rtol", "stat_value_abs", "stat_value_rel"):
            d[k] = float_from_json(d[k])
        return cls(**d)


def _stat_values(m: TensorMetrics, stat: str) -> tuple[float, float]:
    return {
        "elementwise": (m.max_abs_err, m.max_rel_err),
        "max": (m.max_abs_err, m.max_rel_err),
        "mean": (m.mean_abs_err, m.mean_rel_err),
        "median": (m.median_abs_err, m.median_rel_err),
        "quantile": (m.quantile_abs_err, m.quantile_rel_err),
    }[stat]


def _nonfinite_reasons(m: TensorMetrics) -> list[str]:
    reasons = []
    if m.nan_engine:
        reasons.append(f"{m.nan_engine} NaN in engine output")
    if m.nan_ref:
        reasons.append(f"{m.nan_ref} NaN in reference output")
    if m.inf_mismatch:
        reasons.append(f"{m.inf_mismatch} Inf mismatch (Inf: engine {m.inf_engine}, reference {m.inf_ref})")
    return reasons


def _over(value: float, tol: float) -> bool:
    return math.isnan(value) or value > tol


def judge(metrics: TensorMetrics, tol: Tolerances, engine=None, reference=None) -> Verdict:
    """Pass/fail of one tensor under the tolerances for its name.

    Uses the metrics alone when they were computed with this name's atol/rtol (elementwise)
    or quantile (quantile); otherwise recomputes them from `engine` and `reference`, and
    raises ValueError when those are not given.
    """
    atol, rtol = tol.for_name(metrics.name)
    stat = tol.error_stat
    stale = (stat == "elementwise" and (metrics.atol, metrics.rtol) != (atol, rtol)) or (
        stat == "quantile" and metrics.quantile != tol.quantile
    )
    if stale:
        if engine is None or reference is None:
            raise ValueError(
                f"{metrics.name}: metrics were computed with atol={metrics.atol:g}, rtol={metrics.rtol:g}, "
                f"quantile={metrics.quantile:g}; judging needs atol={atol:g}, rtol={rtol:g}, "
                f"quantile={tol.quantile:g}: pass engine and reference, or compare with those"
            )
        metrics = compare_tensors(metrics.name, engine, reference, atol=atol, rtol=rtol, quantile=tol.quantile)

    abs_v, rel_v = _stat_values(metrics, stat)
    problems = _nonfinite_reasons(metrics)
    if problems:
        passed, reason = False, "; ".join(problems)
    elif stat == "elementwise":
        n_out, n = metrics.n_outside, metrics.numel
        passed = n_out == 0
        if passed:
            reason = f"all {n} elements within atol {atol:g} or rtol {rtol:g}"
        else:
            reason = (
                f"{n_out} of {n} elements ({metrics.frac_outside * 100:.3g}%) exceed atol {atol:g} and rtol {rtol:g}; "
                f"max |err| {metrics.max_abs_err:.3g} at {metrics.max_abs_index}"
            )
    else:
        label = f"p{tol.quantile * 100:g}" if stat == "quantile" else stat
        abs_over, rel_over = _over(abs_v, atol), _over(rel_v, rtol)
        passed = not (abs_over and rel_over)
        if not passed:
            reason = f"{label} |err| {abs_v:.3g} > atol {atol:g} and {label} rel {rel_v:.3g} > rtol {rtol:g}"
        elif not abs_over:
            reason = f"{label} |err| {abs_v:.3g} <= atol {atol:g}"
        else:
            reason = f"{label} rel {rel_v:.3g} <= rtol {rtol:g}"
    return Verdict(
        name=metrics.name,
        passed=passed,
        atol=atol,
        rtol=rtol,
        stat_value_abs=abs_v,
        stat_value_rel=rel_v,
        reason=reason,
        error_stat=stat,
    )


def check(name: str, engine, reference, tol: Tolerances) -> tuple[TensorMetrics, Verdict]:
    """Compare one tensor with the tolerances for its name, then judge it: what a diff row needs."""
    atol, rtol = tol.for_name(name)
    metrics = compare_tensors(name, engine, reference, atol=atol, rtol=rtol, quantile=tol.quantile)
    return metrics, judge(metrics, tol)
