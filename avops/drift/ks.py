"""Two-sample Kolmogorov–Smirnov drift tests, fast, with p-values equal to ``scipy.stats.ks_2samp``.

Why not call ``ks_2samp`` per column: it sorts both samples, concatenates them and runs two
binary searches of the concatenation on every call. A drift monitor compares today's telemetry
with a *fixed* reference (what the production model was trained on), so the reference is sorted
once, at training time, together with its own right-ranks (:class:`Reference`). A test then
sorts only the current sample and merges it with the reference (no binary searches), and
columns run in threads (NumPy's sorts release the GIL).

The statistic is computed at exactly the points scipy uses (every value of both samples) with
the same float arithmetic (``count_a / n_a - count_b / n_b``), so D is bit-identical. The
p-value follows scipy's choice (two-sided): ``mode='auto'`` is exact when the larger sample has
at most 10,000 values, in which case scipy itself computes it, and otherwise Smirnov's
asymptotic distribution ``kstwo.sf(D, round(n*m/(n+m)))``, the very call scipy makes — computed by
:func:`avops.drift.smirnov.kstwo_sf`, which gives scipy's numbers without summing every term of the
exact one-sided tail (that sum dominated the cost of a drifted column).

Many columns are tested at once, so significance is controlled with Benjamini–Hochberg (scipy's
``false_discovery_control``); a column is flagged only if its adjusted p-value is below ``alpha``
*and* D reaches ``min_effect`` *and* both samples have ``min_samples`` values: a million-vehicle
fleet makes any shift "significant", not every shift matters.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from avops.drift.smirnov import kstwo_sf

MAX_EXACT_N = 10_000  # scipy's MAX_AUTO_N: above it, ks_2samp(mode="auto") is asymptotic


@dataclass
class Reference:
    """Per column: the sorted finite reference values and their right-ranks (``searchsorted(v, v, 'right')``)."""

    values: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @classmethod
    def build(cls, columns: dict[str, np.ndarray], meta: dict | None = None) -> "Reference":
        values, ranks = {}, {}
        for name, col in columns.items():
            v = np.sort(_finite(col))
            values[name], ranks[name] = v, _right_ranks(v)
        return cls(values, ranks, dict(meta or {}))

    @property
    def columns(self) -> list[str]:
        return list(self.values)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {f"v:{k}": v for k, v in self.values.items()} | {f"r:{k}": r for k, r in self.ranks.items()}
        np.savez(buf, **arrays, __meta__=np.frombuffer(repr(self.meta).encode(), dtype=np.uint8))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Reference":
        import ast

        z = np.load(io.BytesIO(data), allow_pickle=False)
        values = {k[2:]: z[k] for k in z.files if k.startswith("v:")}
        ranks = {k[2:]: z[k] for k in z.files if k.startswith("r:")}
        meta = ast.literal_eval(bytes(z["__meta__"]).decode()) if "__meta__" in z.files else {}
        return cls(values, ranks, meta)

    def save(self, path: Path) -> None:
        from avops.store import atomic_write_bytes

        atomic_write_bytes(path, self.to_bytes())


def _finite(col) -> np.ndarray:
    a = np.asarray(col, dtype=np.float64)
    return a[np.isfinite(a)]


def _right_ranks(sorted_values: np.ndarray) -> np.ndarray:
    """``searchsorted(v, v, 'right')`` for sorted ``v``, in O(n): the end of each run of equal values."""
    n = sorted_values.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.diff(sorted_values) != 0
    if change.all():  # no ties (continuous telemetry, the usual case): rank i is i + 1
        return np.arange(1, n + 1, dtype=np.int64)
    ends = np.flatnonzero(change) + 1  # exclusive end of every run but the last
    bounds = np.concatenate([ends, [n]])
    lengths = np.diff(np.concatenate([[0], bounds]))
    return np.repeat(bounds, lengths).astype(np.int64)


def ks_statistic(ref: np.ndarray, ref_ranks: np.ndarray, cur: np.ndarray) -> float:
    """Two-sided D of sorted ``ref`` (with its right-ranks) against unsorted ``cur``: bit-identical to scipy's.

    scipy evaluates both ECDFs at every value of both samples (two binary searches of the
    concatenation). Here one stable merge of the two sorted samples gives the same counts: current
    values sort before equal reference values, so a reference value's position counts the current
    values <= it, and a current value's position counts the reference values < it (ties are then
    completed from the reference's right-ranks). The differences are formed with scipy's
    arithmetic (``count_a / n_a - count_b / n_b``), so the maximum is the same double.
    """
    cur = np.sort(cur)
    n1, n2 = ref.size, cur.size
    is_ref = np.argsort(np.concatenate([cur, ref]), kind="stable") >= n2  # two sorted runs: one merge
    cur_le_ref = np.flatnonzero(is_ref) - np.arange(n1)
    ref_lt_cur = np.flatnonzero(~is_ref) - np.arange(n2)
    k = np.minimum(ref_lt_cur, n1 - 1)
    tie = ref[k] == cur
    tie &= ref_lt_cur < n1
    ref_le_cur = np.where(tie, ref_ranks[k], ref_lt_cur) if tie.any() else ref_lt_cur
    d_ref = ref_ranks / n1 - cur_le_ref / n2  # at the reference's values
    d_cur = ref_le_cur / n1 - _right_ranks(cur) / n2  # at the current sample's values
    max_s = max(d_ref.max(), d_cur.max())
    min_s = min(d_ref.min(), d_cur.min())
    return float(max(np.clip(-min_s, 0, 1), max_s))


def ks_pvalue(d: float, n1: int, n2: int, ref: np.ndarray | None = None, cur: np.ndarray | None = None) -> tuple[float, str, float]:
    """scipy's two-sided p-value for D, the method scipy uses, and D as scipy reports it.

    In exact mode scipy snaps D to the lattice of possible values (``round(D * lcm) / lcm``), so
    small samples are handed to scipy whole; that costs nothing at those sizes.
    """
    if max(n1, n2) <= MAX_EXACT_N and ref is not None and cur is not None:
        r = stats.ks_2samp(ref, cur, alternative="two-sided", method="auto")
        return float(r.pvalue), "exact", float(r.statistic)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo_sf(d, float(np.round(en))), 0, 1)), "asymp", d


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    statistic: float
    pvalue: float
    pvalue_adjusted: float
    method: str
    n_reference: int
    n_current: int
    drifted: bool
    reason: str


@dataclass(frozen=True)
class DriftPolicy:
    alpha: float = 0.01  # false discovery rate over the columns tested together
    min_effect: float = 0.01  # smallest D that counts (0.05 sigma of a normal is D ~ 0.02)
    min_samples: int = 200  # per sample; fewer values cannot flag drift


def detect_drift(reference: Reference, current: dict[str, np.ndarray], policy: DriftPolicy = DriftPolicy(),
               threads: int | None = None) -> list[ColumnDrift]:
    """KS per column (threads), Benjamini–Hochberg over the columns, then effect-size and sample-size floors."""
    names = [c for c in reference.columns if c in current]

    def one(name: str) -> tuple[float, float, str, int, int]:
        ref, cur = reference.values[name], _finite(current[name])
        if ref.size == 0 or cur.size == 0:
            return 0.0, 1.0, "empty", ref.size, cur.size
        if max(ref.size, cur.size) <= MAX_EXACT_N:  # scipy's exact path: it needs the samples, and they are small
            p, method, d = ks_pvalue(0.0, ref.size, cur.size, ref, cur)
        else:
            p, method, d = ks_pvalue(ks_statistic(ref, reference.ranks[name], cur), ref.size, cur.size)
        return d, p, method, ref.size, cur.size

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        results = list(pool.map(one, names))
    raw = np.array([r[1] for r in results]) if results else np.zeros(0)
    adjusted = stats.false_discovery_control(raw, method="bh") if raw.size else raw
    out = []
    for name, (d, p, method, n1, n2), q in zip(names, results, adjusted):
        if min(n1, n2) < policy.min_samples:
            drifted, why = False, f"too few values ({min(n1, n2)} < {policy.min_samples})"
        elif q >= policy.alpha:
            drifted, why = False, f"not significant (BH-adjusted p {q:.3g} >= {policy.alpha})"
        elif d < policy.min_effect:
            drifted, why = False, f"significant but small (D {d:.4f} < {policy.min_effect})"
        else:
            drifted, why = True, f"D {d:.4f}, BH-adjusted p {q:.3g}"
        out.append(ColumnDrift(name, d, p, float(q), method, n1, n2, drifted, why))
    return out
