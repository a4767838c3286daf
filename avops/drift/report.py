"""Drift for people: Evidently's data-drift HTML and a compact Markdown table with bars."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from avops.drift.ks import ColumnDrift, Reference

REPORT_ROWS = 5_000  # per side and quantity: the HTML is for reading, decisions use every sample


def _sample(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.full(n, np.nan)
    return rng.choice(values, size=n, replace=values.size < n)


def evidently_html(reference: Reference, current: dict[str, np.ndarray], columns: list[str], seed: int = 0) -> bytes:
    """Evidently 0.7 ``DataDriftPreset`` (KS) on a seeded sample of each quantity, as one HTML file."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(seed)
    cols = [c for c in columns if c in reference.values and c in current and np.isfinite(current[c]).any()]
    if not cols:
        raise ValueError("no quantity has both reference and current samples; nothing to report")
    ref = pd.DataFrame({c: _sample(reference.values[c], REPORT_ROWS, rng) for c in cols})
    cur = pd.DataFrame({c: _sample(current[c], REPORT_ROWS, rng) for c in cols})
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # Evidently correlates constant columns (a saturated signal)
        snapshot = Report([DataDriftPreset(columns=cols, method="ks")]).run(cur, ref)
    return snapshot.get_html_str(as_iframe=False).encode()


def drift_markdown(columns: list[ColumnDrift]) -> str:
    rows = ["| quantity | KS D | | p (BH) | samples (ref / now) | verdict |", "|---|---|---|---|---|---|"]
    for c in sorted(columns, key=lambda c: -c.statistic):
        bar = "█" * int(round(min(1.0, c.statistic) * 20))
        p = f"{c.pvalue_adjusted:.1e}" if math.isfinite(c.pvalue_adjusted) else "–"
        rows.append(f"| {c.column} | {c.statistic:.3f} | `{bar:<20}` | {p} | {c.n_reference} / {c.n_current} | "
                    f"{'**drift**' if c.drifted else c.reason or 'stable'} |")
    return "\n".join(rows)
