"""The maintenance model per component: ridge regression of the measured wear from telemetry features.

Why a regression of the measurement and not a classifier of "fails within the horizon": a
cohort sees few replacements a year, far too few positives to learn from, but every workshop
inspection measures the pads. The model estimates today's thickness; "needs service within
the horizon" follows from it and the cohort's wear rate, and is judged as its own gate.
Ridge in closed form: deterministic, auditable, and a two-node ONNX graph (MatMul, Add).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from avops.maintenance.config import ComponentGate, ComponentSpec
from avops.training.bounds import wilson_lower

DAY = pd.Timedelta(days=1)
DEFAULT_WEAR_MM_PER_DAY = 40 / 9000  # ~40 km a day, ~9000 km per mm of pad


@dataclass
class ComponentModel:
    component: str
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    wear_rate_mm_per_day: float
    wear_limit_mm: float
    horizon_days: float

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        x = X.reindex(columns=self.features).to_numpy(dtype=float)
        x = np.where(np.isfinite(x), x, np.asarray(self.mean))
        return ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef) + self.intercept

    def service_due(self, X: pd.DataFrame) -> np.ndarray:
        """Whether the predicted wear reaches the limit within the horizon."""
        return self.predict(X) - self.wear_rate_mm_per_day * self.horizon_days <= self.wear_limit_mm

    def to_dict(self) -> dict:
        return asdict(self)


def label_rows(features: pd.DataFrame, orders: pd.DataFrame, spec: ComponentSpec, horizon_days: float) -> pd.DataFrame:
    """Per feature row: the measured thickness nearest in time (``target_mm``) and whether the
    pads were at the limit within the horizon after it (``due``; NaN without a visit in it).

    A replacement visit before the drive means new pads (their thickness is known); one after
    it measured the pads the drive ran on.
    """
    comp = orders[orders["component"] == spec.name]
    as_of = pd.to_datetime(features["as_of"], unit="s", utc=True)
    target, due = np.full(len(features), np.nan), np.full(len(features), np.nan)
    by_vehicle = {v: g for v, g in comp.groupby("vehicle_id")}
    for i, (vehicle, t) in enumerate(zip(features["vehicle_id"], as_of)):
        g = by_vehicle.get(vehicle)
        if g is None:
            continue
        gap = (g["visit_time"] - t) / DAY
        near = g[gap.abs() <= spec.label_max_gap_days]
        if len(near):
            j = (near["visit_time"] - t).abs().idxmin()
            before, replaced = near.at[j, "visit_time"] <= t, near.at[j, "operation"] == "replaced"
            target[i] = spec.new_mm if (before and replaced) else near.at[j, "measured_mm"]
        ahead = g[(gap > 0) & (gap <= horizon_days)]
        if len(ahead):
            due[i] = float(((ahead["measured_mm"] <= spec.wear_limit_mm) | (ahead["operation"] == "replaced")).any())
    return pd.DataFrame({"target_mm": target, "due": due}, index=features.index)


def wear_rate(orders: pd.DataFrame, component: str) -> float:
    """Median wear per day between consecutive inspections of one vehicle (no replacement between)."""
    rates = []
    for _, g in orders[orders["component"] == component].sort_values("visit_time").groupby("vehicle_id"):
        for (_, a), (_, b) in zip(g.iterrows(), g.iloc[1:].iterrows()):
            days = (b["visit_time"] - a["visit_time"]) / DAY
            if a["operation"] == "inspection" and days > 20:
                rates.append((a["measured_mm"] - b["measured_mm"]) / days)
    return float(max(0.0, np.median(rates))) if rates else DEFAULT_WEAR_MM_PER_DAY


def fit(X: pd.DataFrame, y: np.ndarray, spec: ComponentSpec, rate: float, horizon_days: float) -> ComponentModel:
    cols = [c for c in spec.features if c in X.columns]
    x = X[cols].to_numpy(dtype=float)
    mean = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0) if len(x) else np.zeros(len(cols))
    mean = np.where(np.isfinite(mean), mean, 0.0)
    x = np.where(np.isfinite(x), x, mean)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    intercept = float(np.mean(y))
    coef = np.linalg.solve(z.T @ z + spec.ridge_alpha * np.eye(len(cols)), z.T @ (y - intercept)) if cols else np.zeros(0)
    return ComponentModel(spec.name, cols, mean.tolist(), scale.tolist(), coef.tolist(), intercept, rate, spec.wear_limit_mm, horizon_days)


@dataclass
class ComponentEvaluation:
    component: str
    n: int
    mae: float
    mae_upper: float
    baseline_mae: float
    skill: float
    positives: int
    flagged_positives: int
    recall: float
    recall_lower: float
    predictions: pd.DataFrame  # vehicle_id, as_of, target_mm, predicted_mm, due, flagged


def evaluate_lovo(X: pd.DataFrame, labels: pd.DataFrame, spec: ComponentSpec, rate: float, horizon_days: float) -> ComponentEvaluation:
    """Leave one vehicle out: each vehicle is predicted by a model fitted on the others only."""
    ok = labels["target_mm"].notna()
    rows = []
    for vehicle in sorted(X.loc[ok, "vehicle_id"].unique()):
        train = ok & (X["vehicle_id"] != vehicle)
        test = ok & (X["vehicle_id"] == vehicle)
        if train.sum() < 2:
            continue
        model = fit(X[train], labels.loc[train, "target_mm"].to_numpy(), spec, rate, horizon_days)
        pred = model.predict(X[test])
        base = float(labels.loc[train, "target_mm"].mean())
        rows.append(pd.DataFrame({"vehicle_id": X.loc[test, "vehicle_id"], "as_of": X.loc[test, "as_of"],
                                  "target_mm": labels.loc[test, "target_mm"], "predicted_mm": pred, "baseline_mm": base,
                                  "due": labels.loc[test, "due"], "flagged": model.service_due(X[test])}))
    p = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["vehicle_id", "as_of", "target_mm", "predicted_mm",
                                                                             "baseline_mm", "due", "flagged"])
    err = (p["predicted_mm"] - p["target_mm"]).abs().to_numpy(dtype=float)
    n = len(err)
    mae = float(err.mean()) if n else math.nan
    upper = float(mae + stats.t.ppf(0.95, n - 1) * err.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    base = float((p["baseline_mm"] - p["target_mm"]).abs().mean()) if n else math.nan
    skill = 1 - mae / base if n and base > 0 else math.nan
    pos = p[p["due"] == 1]
    hits = int(pos["flagged"].astype(bool).sum())
    recall = hits / len(pos) if len(pos) else math.nan
    lower = wilson_lower(hits, len(pos)) if len(pos) else math.nan
    return ComponentEvaluation(spec.name, n, mae, upper, base, skill, len(pos), hits, recall, lower, p)


def judge(ev: ComponentEvaluation, gate: ComponentGate) -> dict:
    """One gate's verdict with its evidence: value, threshold, samples, pass/warn/block."""
    value, samples, ok = {
        "mae_upper_bound_mm": (ev.mae_upper, ev.n, lambda v: v <= gate.threshold),
        "skill_vs_mean": (ev.skill, ev.n, lambda v: v >= gate.threshold),
        "limit_recall": (ev.recall_lower, ev.positives, lambda v: v >= gate.threshold),
    }[gate.name]
    if samples < gate.min_samples or not math.isfinite(value):
        status = "insufficient"
        blocks = gate.on_insufficient == "block"
        reason = f"{samples} samples < {gate.min_samples} required ({gate.on_insufficient})"
    else:
        passed = bool(ok(value))
        status, blocks = ("passed", False) if passed else ("failed", True)
        reason = f"{value:.3f} {'meets' if passed else 'misses'} {gate.threshold:g}"
    return {"component": ev.component, "gate": f"{ev.component}.{gate.name}", "value": None if not math.isfinite(value) else value,
            "threshold": gate.threshold, "samples": samples, "min_samples": gate.min_samples, "status": status, "blocks": blocks,
            "reason": reason}
