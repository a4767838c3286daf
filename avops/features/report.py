"""Feature table summaries for people: one line per feature with its spread and a sparkline."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from avops.features.definitions import FeatureDef

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray, bins: int = 12) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return ""
    if v.min() == v.max():
        return _BARS[0] * bins
    counts, _ = np.histogram(v, bins=bins)
    return "".join(_BARS[min(len(_BARS) - 1, int(c / counts.max() * (len(_BARS) - 1) + 0.5))] for c in counts)


def feature_markdown(table: pa.Table, features: list[FeatureDef]) -> str:
    rows = ["| feature | version | window | agg | min | median | max | distribution |", "|---|---|---|---|---|---|---|---|"]
    for f in features:
        v = table[f.name].to_numpy(zero_copy_only=False).astype(float)
        fin = v[np.isfinite(v)]
        stats = [f"{x:.4g}" for x in (fin.min(), np.median(fin), fin.max())] if fin.size else ["–"] * 3
        rows.append(f"| {f.name} | `{f.version}` | {f.window_s / 3600:g} h | {f.agg} | {' | '.join(stats)} | {sparkline(v)} |")
    return "\n".join(rows)
