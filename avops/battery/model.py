"""State of health and remaining useful life per chemistry: labels, ridge models, held-out-cell evidence.

Labels come from the reference test itself, never from the simulator: state of health is the
capacity the test's full discharge measured (pulse + C/10 discharge from full, by coulomb
counting) over the chemistry's rated capacity; remaining useful life is the number of usage
cycles until the cell's measured state of health crosses the end-of-life threshold (linear
between the two tests around the crossing). A cell that has not crossed it yet is censored: it
has no RUL label, and says so. The features come from the slow charge's partial window only,
as a BMS sees it, so the label is not in the inputs.

Evidence is leave-one-cell-out: every cell is predicted by models that never saw it, so the
error is the error on an unseen cell, not on unseen cycles of seen cells.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

TARGETS = ("soh", "rul_cycles")


@dataclass
class LinearModel:
    """Ridge regression on standardised features with training-mean imputation: what the BMS engine computes."""

    target: str
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        x = X.reindex(columns=self.features).to_numpy(np.float64)
        m = np.asarray(self.mean)
        x = np.where(np.isfinite(x), x, m)
        return (x - m) / np.asarray(self.scale) @ np.asarray(self.coef) + self.intercept

    def to_dict(self) -> dict:
        return asdict(self)


def fit_linear(X: pd.DataFrame, y: np.ndarray, features: list[str], target: str, alpha: float,
               standardise_on: pd.DataFrame | None = None) -> LinearModel:
    """``standardise_on``: the rows imputation and scaling come from (all training rows, so that the SoH and
    RUL models, fitted on different label subsets, share one input transform and one engine)."""
    base = (standardise_on if standardise_on is not None else X).reindex(columns=features).to_numpy(np.float64)
    mean = np.nanmean(np.where(np.isfinite(base), base, np.nan), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    base = np.where(np.isfinite(base), base, mean)
    scale = base.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    x = X.reindex(columns=features).to_numpy(np.float64)
    x = np.where(np.isfinite(x), x, mean)
    z = (x - mean) / scale
    b = float(np.mean(y))
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - b))
    return LinearModel(target, list(features), mean.tolist(), scale.tolist(), coef.tolist(), b)


def measured_capacity(tests: pa.Table, samples: pa.Table) -> pd.Series:
    """Ah removed from full to the lower cut-off (pulse, relaxation and C/10 discharge), per test_id."""
    mask = pc.is_in(samples.column("step"), pa.array(["pulse", "relax", "capacity_discharge"]))
    s = samples.filter(mask).select(["test_id", "time_s", "current_a"]).to_pandas().sort_values(["test_id", "time_s"])
    dt = s.groupby("test_id")["time_s"].diff().fillna(0.0)
    i = s["current_a"].astype(np.float64)
    prev = s.groupby("test_id")["current_a"].shift().astype(np.float64).fillna(i)
    s["ah"] = 0.5 * (i + prev) * dt / 3600.0
    return s.groupby("test_id")["ah"].sum()


def labels(features: pd.DataFrame, capacity: pd.Series, rated_ah: float, eol_soh: float) -> pd.DataFrame:
    """``soh`` for every test; ``rul_cycles`` up to end of life, NaN for censored cells and after end of life."""
    out = features[["test_id", "cell_id", "usage_cycles"]].copy()
    out["capacity_ah"] = out["test_id"].map(capacity).astype(float)
    out["soh"] = out["capacity_ah"] / rated_ah
    out["rul_cycles"] = np.nan
    out["eol_cycle"] = np.nan
    for _, g in out.sort_values(["cell_id", "usage_cycles"]).groupby("cell_id"):
        s, c = g["soh"].to_numpy(), g["usage_cycles"].to_numpy(np.float64)
        below = np.flatnonzero(s <= eol_soh)
        if len(below) == 0 or below[0] == 0:
            continue  # censored (never reached end of life here), or already there at its first test
        j = below[0]
        eol = c[j - 1] + (s[j - 1] - eol_soh) / (s[j - 1] - s[j]) * (c[j] - c[j - 1])
        before = g.index[c < eol]
        out.loc[before, "rul_cycles"] = eol - out.loc[before, "usage_cycles"]
        out.loc[g.index, "eol_cycle"] = eol
    return out


def band_of(temp_c: float, bands: dict[str, tuple[float, float]]) -> str:
    for name, (lo, hi) in bands.items():
        if lo <= temp_c < hi:
            return name
    return "outside_bands"


@dataclass
class CellOutEvaluation:
    predictions: pd.DataFrame  # one row per test: truth, both models' predictions, band, fleet kind
    per_cell: pd.DataFrame     # one row per cell and target: MAE of the model trained on both fleets


def evaluate_cells_out(X: pd.DataFrame, y: pd.DataFrame, features: list[str], alpha: float, kinds: dict[str, str],
                       bands: dict[str, tuple[float, float]]) -> CellOutEvaluation:
    """Leave one cell out, twice: trained on both fleets, and on vehicle cells only (the generalisation claim)."""
    data = X.merge(y[["test_id", *TARGETS]], on="test_id")
    data["kind"] = data["fleet"].map(kinds)
    cell_temp = data.groupby("cell_id")["temperature_c"].mean()
    data["band"] = data["cell_id"].map(lambda c: band_of(float(cell_temp[c]), bands))
    preds = []
    for cell in sorted(data["cell_id"].unique()):
        held = data[data["cell_id"] == cell]
        rest = data[data["cell_id"] != cell]
        row = held[["test_id", "cell_id", "fleet", "kind", "band", "usage_cycles", *TARGETS]].copy()
        for train_name, train in (("both", rest), ("vehicle_only", rest[rest["kind"] == "vehicle"])):
            for target in TARGETS:
                ok = train[target].notna()
                if ok.sum() < len(features) // 2 + 2:
                    row[f"{target}_pred_{train_name}"] = np.nan
                    continue
                m = fit_linear(train[ok], train.loc[ok, target].to_numpy(), features, target, alpha, standardise_on=train)
                row[f"{target}_pred_{train_name}"] = m.predict(held)
        preds.append(row)
    P = pd.concat(preds, ignore_index=True)
    cells = []
    for target in TARGETS:
        err = (P[f"{target}_pred_both"] - P[target]).abs()
        for cell, e in err[P[target].notna()].groupby(P["cell_id"]):
            first = P[P["cell_id"] == cell].iloc[0]
            cells.append({"cell_id": cell, "fleet": first["fleet"], "kind": first["kind"], "band": first["band"], "target": target,
                          "mae": float(e.mean()), "tests": int(len(e))})
    return CellOutEvaluation(P, pd.DataFrame(cells, columns=["cell_id", "fleet", "kind", "band", "target", "mae", "tests"]))


def upper_bound(values: np.ndarray, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of the mean over cells (Student t): cells are the independent units."""
    n = len(values)
    if n == 0:
        return float("nan")
    if n == 1:
        return float("inf")
    return float(np.mean(values) + stats.t.ppf(confidence, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def generalization(P: pd.DataFrame) -> pd.DataFrame:
    """MAE on held-out cells of each fleet kind, for the model trained on vehicle cells only vs on both fleets."""
    rows = []
    for target in TARGETS:
        for train in ("vehicle_only", "both"):
            for kind in ("vehicle", "stationary"):
                sel = P[(P["kind"] == kind) & P[target].notna() & P[f"{target}_pred_{train}"].notna()]
                err = (sel[f"{target}_pred_{train}"] - sel[target]).abs()
                rows.append({"target": target, "trained_on": train, "evaluated_on": f"held-out {kind} cells",
                             "cells": int(sel["cell_id"].nunique()), "tests": int(len(sel)),
                             "mae": float(err.mean()) if len(sel) else float("nan")})
    return pd.DataFrame(rows)
