"""Markdown plots for the Dagster UI and reports: slice metrics with their worst case, gates, shadow rates."""

from __future__ import annotations

import math

import pandas as pd

from avops.training.gates import GateResult

WIDTH = 20


def _bar(value: float, lower: float | None = None, threshold: float | None = None, width: int = WIDTH) -> str:
    """``█`` up to the lower bound, ``▒`` up to the point estimate, ``|`` at the threshold, on a 0..1 axis."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "`" + "·" * width + "`"
    cells = []
    lo = lower if lower is not None and not math.isnan(lower) else value
    for i in range(width):
        x = (i + 0.5) / width
        cell = "█" if x <= lo else "▒" if x <= value else "·"
        if threshold is not None and i == min(width - 1, int(threshold * width)):
            cell = "|"
        cells.append(cell)
    return "`" + "".join(cells) + "`"


def gate_chart(title: str, gates: list[GateResult]) -> str:
    """One row per gated slice: the metric (█ worst case, ▒ point estimate, | threshold), samples and verdict."""
    lines = [f"**{title}**", "", "█ 95% lower bound · ▒ point estimate · `|` gate threshold", "",
             "| slice | metric | 0 … 1 | value [lower] | samples | production | verdict |", "|---|---|---|---:|---:|---:|---|"]
    for g in gates:
        val = "n/a" if g.value is None or math.isnan(g.value) else f"{g.value:.2f} [{g.lower_bound:.2f}]"
        prod = "" if g.production_value is None or math.isnan(g.production_value) else f"{g.production_value:.2f}"
        verdict = {"pass": "✅ pass", "fail": "⛔ FAIL", "insufficient_evidence": "⛔ too few samples" if g.blocks else "⚠️ too few samples"}[g.status]
        lines.append(f"| {g.gate} | {g.metric} | {_bar(g.value, g.lower_bound, g.threshold)} | {val} | {g.samples}/{g.min_samples} | {prod} | "
                     f"{verdict}{'' if g.passed else ': ' + g.reason} |")
    return "\n".join(lines) + "\n"


def slice_chart(title: str, slices: pd.DataFrame, metric: str = "recall") -> str:
    lines = [f"**{title}**", "", "| slice | 0 … 1 | value [lower] | objects | frames |", "|---|---|---:|---:|---:|"]
    for r in slices.to_dict("records"):
        v, lo = r[metric], r[f"{metric}_lower"]
        val = "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.2f} [{lo:.2f}]"
        lines.append(f"| {r['slice']} | {_bar(v, lo)} | {val} | {r['objects']} | {r['frames']} |")
    return "\n".join(lines) + "\n"


def rate_chart(title: str, rates: pd.DataFrame) -> str:
    lines = [f"**{title}**", "", "| slice | 0 … 1 | rate | disagreeing / frames |", "|---|---|---:|---:|"]
    for r in rates.to_dict("records"):
        v = r["rate"]
        lines.append(f"| {r['slice']} | {_bar(v)} | {'n/a' if isinstance(v, float) and math.isnan(v) else f'{v:.2f}'} | "
                     f"{r['disagreeing']} / {r['frames']} |")
    return "\n".join(lines) + "\n"


def curve_chart(curve: list[dict]) -> str:
    per_epoch: dict[int, list[float]] = {}
    for p in curve:
        per_epoch.setdefault(int(p["epoch"]), []).append(float(p["loss"]))
    if not per_epoch:
        return "**Training loss**: no data\n"
    top = max(sum(v) / len(v) for v in per_epoch.values()) or 1.0
    lines = ["**Training loss per epoch**", "", "| epoch | | loss |", "|---|---|---:|"]
    for e, v in sorted(per_epoch.items()):
        m = sum(v) / len(v)
        lines.append(f"| {e:02d} | `{'█' * max(1, round(WIDTH * m / top))}` | {m:.3f} |")
    return "\n".join(lines) + "\n"
