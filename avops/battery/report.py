"""Battery evidence for people: fade curves per cell, gates, and the generalisation comparison as bars."""

from __future__ import annotations

import math

import pandas as pd

_ICON = {"passed": "✅ pass", "failed": "⛔ FAIL", "insufficient": "⚠️ too few cells"}
_BLOCKS = "▁▂▃▄▅▆▇█"


def spark(values: list[float], lo: float, hi: float) -> str:
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
            continue
        k = int((min(max(v, lo), hi) - lo) / (hi - lo + 1e-12) * (len(_BLOCKS) - 1))
        out.append(_BLOCKS[k])
    return "".join(out)


def fade_markdown(features: pd.DataFrame, labels: pd.DataFrame) -> str:
    """Per cell: measured SoH over its reference tests (a sparkline on 70-100 %) next to the main IC peak height."""
    d = features.merge(labels[["test_id", "soh", "rul_cycles"]], on="test_id").sort_values(["cell_id", "usage_cycles"])
    hmax = float(d["ic_peak_height"].max()) if len(d) else 1.0
    rows = ["SoH ▁ 70 % … █ 100 % · IC peak height ▁ 0 … █ max", "",
            "| cell | tests | cycles | SoH | SoH first → last | IC peak height | R25 (mΩ) first → last | T (°C) |", "|---|---:|---:|---|---|---|---|---:|"]
    for cell, g in d.groupby("cell_id"):
        rows.append(f"| {cell} | {len(g)} | {int(g['usage_cycles'].max())} | `{spark(list(g['soh']), 0.7, 1.0)}` | "
                    f"{g['soh'].iloc[0]:.3f} → {g['soh'].iloc[-1]:.3f} | `{spark(list(g['ic_peak_height']), 0, hmax)}` | "
                    f"{g['r_pulse_25c_mohm'].iloc[0]:.1f} → {g['r_pulse_25c_mohm'].iloc[-1]:.1f} | {g['temperature_c'].mean():.1f} |")
    return "\n".join(rows)


def gates_markdown(gates: list[dict]) -> str:
    rows = ["| gate | upper bound | threshold | held-out cells | mean cell error | verdict |", "|---|---:|---:|---:|---:|---|"]
    for g in gates:
        value = "–" if g["value"] is None else f"{g['value']:.4g}"
        mean = "–" if g.get("mean_cell_mae") is None else f"{g['mean_cell_mae']:.4g}"
        verdict = "⛔ too few cells" if g["status"] == "insufficient" and g["blocks"] else _ICON[g["status"]]
        rows.append(f"| {g['gate']} | {value} | {g['threshold']:g} | {g['samples']}/{g['min_samples']} | {mean} | {verdict}: {g['reason']} |")
    return "\n".join(rows)


def generalization_markdown(gen: pd.DataFrame, width: int = 30) -> str:
    """Held-out-cell error of the model trained on vehicle cells only vs on both fleets, as bars per target."""
    out = []
    for target, g in gen.groupby("target", sort=False):
        top = float(g["mae"].max()) if g["mae"].notna().any() else 1.0
        unit = "SoH" if target == "soh" else "cycles"
        out += [f"**{target}**: mean absolute error on held-out cells ({unit})", "", "| trained on | evaluated on | cells | MAE | |",
                "|---|---|---:|---:|---|"]
        for r in g.itertuples():
            bar = "█" * max(1, int(round(r.mae / top * width))) if math.isfinite(r.mae) and top > 0 else ""
            mae = f"{r.mae:.4f}" if target == "soh" and math.isfinite(r.mae) else (f"{r.mae:.1f}" if math.isfinite(r.mae) else "–")
            out.append(f"| {r.trained_on.replace('_', ' ')} | {r.evaluated_on} | {r.cells} | {mae} | `{bar}` |")
        out.append("")
    return "\n".join(out)
