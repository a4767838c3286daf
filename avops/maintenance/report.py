"""Maintenance model evidence for people: gates and a measured-vs-estimated strip per vehicle."""

from __future__ import annotations

import math

import pandas as pd

_ICON = {"passed": "✅ pass", "failed": "⛔ FAIL", "insufficient": "⚠️ too few samples"}


def gates_markdown(gates: list[dict]) -> str:
    rows = ["| gate | value | threshold | samples | verdict |", "|---|---:|---:|---:|---|"]
    for g in gates:
        value = "–" if g["value"] is None else f"{g['value']:.3f}"
        verdict = "⛔ too few samples" if g["status"] == "insufficient" and g["blocks"] else _ICON[g["status"]]
        rows.append(f"| {g['gate']} | {value} | {g['threshold']:g} | {g['samples']}/{g['min_samples']} | {verdict}: {g['reason']} |")
    return "\n".join(rows)


def predictions_markdown(predictions: pd.DataFrame, scale_mm: float = 12.0, width: int = 24) -> str:
    """Per labelled drive: ``●`` the workshop measurement, ``○`` the held-out estimate, on 0..12 mm."""
    rows = [f"● measured · ○ estimated (vehicle left out) · 0 … {scale_mm:g} mm", "",
            "| vehicle | drive as of | pads | measured | estimated |", "|---|---|---|---:|---:|"]
    for r in predictions.sort_values(["vehicle_id", "as_of"]).itertuples():
        cells = ["·"] * width
        for value, mark in ((r.predicted_mm, "○"), (r.target_mm, "●")):
            if value is not None and not math.isnan(value):
                cells[min(width - 1, max(0, int(value / scale_mm * width)))] = mark
        when = pd.Timestamp(r.as_of, unit="s", tz="UTC").strftime("%Y-%m-%d")
        rows.append(f"| {r.vehicle_id} | {when} | `{''.join(cells)}` | {r.target_mm:.1f} | {r.predicted_mm:.1f} |")
    return "\n".join(rows)
