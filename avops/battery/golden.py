"""Golden vectors: the float64 online features of real reference tests, for checking float32 ports.

A golden-vector document (``golden_vectors``) holds, for one chemistry's feature definition,
every constant an implementation needs and a list of vectors: a reference test's samples, the
cell state the BMS held before it, the features the float64 ``features.online_features``
computes and, per feature, how far a correct float32 implementation may be from them.
``write_golden_vectors`` gives its canonical JSON; ``check_against_golden`` runs any callable
with the ``online_features`` signature (the float32 ``bms_reference``, or the C port behind
ctypes) over every vector and reports the errors.

Conventions (also written into the document, for the team that only gets the JSON):

* NaN is written as JSON ``null`` (a cell's first test has no trend; an implementation must then
  return NaN).
* ``current_a``, ``voltage_v`` and ``temperature_c`` are float32 values as the BMS log stores
  them, written as the shortest decimal that parses back to the same float32: parse them as
  float32. ``time_s`` is float64 (seconds from the test's start).
* A feature passes when ``|got - expected| <= abs + rel * |expected|``.
* Peak positions may differ by one grid step: where two neighbouring grid points of a float64
  curve (IC, or dV/dQ) are closer than the float32 error bound, a correct float32 implementation
  may pick either, and every feature read at that peak moves with it. The vector then lists the
  float64 values at the neighbouring point under ``alternatives``; the peak's features pass if
  they all match the expected values or all match one alternative.
* Tests whose float64 result is not reproducible in float32 at all (a grid voltage within
  float32 rounding of two voltage levels of the samples, a peak decided between two separate
  grid points closer than the error bound, a charge that does not cover the window) are left
  out and listed under ``excluded`` with the reason.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from avops.battery.features import (FEATURE_NAMES, FEATURES_VERSION, GAS_CONSTANT, T_REF_K, BatteryFeatureSpec, CellState,
                                    Embedding, collapse_plateaus, ic_curve, online_features, q_on_grid)

FORMAT = "avops.battery.golden_vectors/1"

# ---- tolerances ----------------------------------------------------------------------------
# Every tolerance is a first-order rounding-error bound of the float32 algorithm (Higham,
# "Accuracy and Stability of Numerical Algorithms": each float32 operation is exact times
# (1 + d), |d| <= U32; a sum of n terms accumulated left to right is off by at most
# (n - 1) * U32 * its largest partial sum; a difference of two accumulated sums only carries the
# rounding of the terms between them), evaluated with each vector's own magnitudes (sample
# counts, charge, currents, times, slopes, curve values) computed in float64 - never with
# observed float32 errors. The conditioning that matters per step:
#
#   * charge integration: U32 x (samples between two grid points) x the accumulated charge, and
#     float32 time stamps (U32 x time) times the current and its changes;
#   * interpolation onto the grid: a float32 grid voltage is up to GRID_ROUNDING x U32 x volts
#     from the float64 one, times the slope dq/dv of the sample segment that grid point falls in
#     (per grid point: a voltage step of one 0.1 mV quantum can carry a whole sample's charge, so
#     this term dominates where it occurs);
#   * dQ/dV: the charge difference divided by one or two grid steps (the cancellation), per grid
#     point, then the worst of the smoothing window (a mean's error is at most its worst term's);
#   * peak heights: a maximum's value is as accurate as the curve (|max(a + d) - max(a)| <=
#     max |d|); positions are exact grid values (GRID_ROUNDING x U32 x volts), or one grid step
#     off where neighbours are tied within the bound (see ``alternatives``);
#   * dV/dQ = 1 / (dQ/dV): the IC error times (dV/dQ)^2; the PCA scores: the IC error times
#     the 1-norm of each component plus the rounding of a 64-term dot product;
#   * the trend: the window-charge error through the least-squares slope (sum |c| / sum c^2);
#   * resistance: inputs are exact float32 values, 4 roundings; the Arrhenius factor: the
#     conditioning of 1/T - 1/T_ref (a difference of two close numbers) times Ea/R;
#   * mean temperature: a left-to-right sum of every sample (M - 1) x U32.
#
# SAFETY doubles every bound for the neglected second-order terms and for library functions
# (exp) that are within a few ulps rather than correctly rounded.
U32 = 2.0 ** -24          # float32 unit roundoff (half of float32 epsilon)
SAFETY = 2.0
GRID_ROUNDING = 6.0       # lo + k * (hi - lo) / (G - 1) in float32 is within 4 U32 max(|lo|, |hi|); 6 for other orders

PEAK_GROUPS = {
    "ic_peak": ("ic_peak_v", "ic_peak_height", "ic_peak_area_ah", "ic_peak2_v", "ic_peak2_height"),
    "ic_peak2": ("ic_peak2_v", "ic_peak2_height"),
    "dvdq_peak": ("dvdq_peak_q_ah", "dvdq_peak_height"),
}
INPUT_DTYPES = {"time_s": "float64", "current_a": "float32", "voltage_v": "float32", "temperature_c": "float32"}

CONVENTIONS = {
    "nan": "NaN is written as null: an expected null means the implementation must return NaN "
           "(a cell's first test has no fade trend; a state's null first_window_charge_ah with an empty history means no test yet)",
    "inputs": "time_s float64 seconds from the test start; current_a, voltage_v, temperature_c float32 "
              "(written as the shortest decimal of the float32 value: parse as float32); current < 0 is charge; "
              "step_runs: the samples' step names as [name, count] runs in sample order",
    "steps": "the slow-charge curve uses the 'slow_charge' samples; the pulse resistance uses the sample before the "
             "first 'pulse' sample and the last 'pulse' sample; temperature_c is the mean over every sample",
    "state": "state_before is the CellState the BMS holds before the test; the implementation updates it: "
             "first_window_charge_ah is set by the first test, history keeps the last trend_tests (usage_cycles, window charge)",
    "tolerance": "a feature passes when |got - expected| <= abs + rel * |expected| (tolerances: first-order float32 "
                 "rounding-error bounds of each vector, times the safety factor)",
    "peaks": "peak positions may differ by one grid step where the two neighbouring float64 values are closer than the "
             "float32 error bound; the features read at that peak then move with it: alternatives lists their float64 "
             "values at the neighbour, and a group passes if all its features match expected or all match one alternative",
    "grid": "grid_v[k] = window_v[0] + k * (window_v[1] - window_v[0]) / (grid_points - 1); q(v) is interpolated "
            "linearly between the last sample with running-max voltage <= grid_v[k] and the next sample",
}


# ---- the document --------------------------------------------------------------------------

def _num(x: float | None) -> float | None:
    """JSON number or null (NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _f32_list(a: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that parse back to the same float32."""
    out = [float(str(x)) for x in np.asarray(a, np.float32)]
    assert np.array_equal(np.asarray(out, np.float32), np.asarray(a, np.float32), equal_nan=True)
    return out


def _runs(step: np.ndarray) -> list[list]:
    step = np.asarray(step).astype(str)
    if len(step) == 0:
        return []
    edges = np.flatnonzero(np.r_[True, step[1:] != step[:-1]])
    counts = np.diff(np.r_[edges, len(step)])
    return [[str(step[a]), int(n)] for a, n in zip(edges, counts)]


def spec_document(spec: BatteryFeatureSpec) -> dict:
    emb = spec.embedding
    return {
        "window_v": [float(spec.window_v[0]), float(spec.window_v[1])],
        "grid_points": spec.grid_points, "smooth_points": spec.smooth_points,
        "peak_half_width_v": spec.peak_half_width_v, "peak_separation_v": spec.peak_separation_v,
        "resistance_activation_j_mol": spec.resistance_activation_j_mol, "trend_tests": spec.trend_tests,
        "gas_constant_j_mol_k": GAS_CONSTANT, "t_ref_k": T_REF_K,
        "embedding": None if emb is None else {"mean": list(emb.mean), "components": [list(c) for c in emb.components]},
    }


def spec_from_golden(doc: dict) -> BatteryFeatureSpec:
    """The definition the document was made for; its version must match the document's."""
    s = doc["spec"]
    emb = None
    if s["embedding"] is not None:
        emb = Embedding(tuple(float(x) for x in s["embedding"]["mean"]),
                        tuple(tuple(float(x) for x in c) for c in s["embedding"]["components"]))
    spec = BatteryFeatureSpec(doc["chemistry"], (float(s["window_v"][0]), float(s["window_v"][1])), int(s["grid_points"]),
                              int(s["smooth_points"]), float(s["peak_half_width_v"]), float(s["peak_separation_v"]),
                              float(s["resistance_activation_j_mol"]), int(s["trend_tests"]), emb)
    if spec.version != doc["definition_version"]:
        raise ValueError(f"golden vectors are for feature definition {doc['definition_version']}, "
                         f"their constants give {spec.version}: the document is damaged or from another avops")
    return spec


def vector_inputs(vec: dict) -> dict:
    """One vector's inputs as the arrays and state ``online_features`` takes (state: a fresh copy)."""
    inp = vec["inputs"]
    arrays = {k: np.asarray(inp[k], dtype=dt) for k, dt in INPUT_DTYPES.items()}
    step = np.concatenate([np.full(n, name, dtype=object) for name, n in inp["step_runs"]]) if inp["step_runs"] else np.array([], object)
    st = vec["state_before"]
    first = st["first_window_charge_ah"]
    if first is None and st["history"]:
        first = float("nan")  # the first test had no window charge
    hist = [(float(c), float("nan") if w is None else float(w)) for c, w in st["history"]]
    return {**arrays, "step": step, "usage_cycles": float(vec["usage_cycles"]), "state": CellState(first, hist)}


# ---- conditioning of one test ------------------------------------------------------------------

@dataclass
class _Analysis:
    tolerance: dict[str, tuple[float, float] | None]
    alternatives: list[dict]
    problems: list[str]
    condition: dict[str, float]


def _peak_group_values(shift_p: int, group: str, q: np.ndarray, ic: np.ndarray, spec: BatteryFeatureSpec, p1: int) -> dict:
    grid, dv, e = spec.grid(), spec.dv, spec.smooth_points
    if group == "ic_peak":
        p = shift_p
        dist = np.abs(grid - grid[p])
        p2 = int(np.argmax(np.where(dist >= spec.peak_separation_v, ic, -np.inf)))
        area = float(np.sum(np.where(dist <= spec.peak_half_width_v + 1e-12, ic, 0.0)) * dv)
        return {"ic_peak_v": grid[p], "ic_peak_height": ic[p], "ic_peak_area_ah": area, "ic_peak2_v": grid[p2], "ic_peak2_height": ic[p2]}
    if group == "ic_peak2":
        return {"ic_peak2_v": grid[shift_p], "ic_peak2_height": ic[shift_p]}
    inner = 1.0 / np.maximum(ic[e:-e], 1e-9)
    return {"dvdq_peak_q_ah": q[shift_p + e] - q[0], "dvdq_peak_height": inner[shift_p]}


def _trend_bound(history: list[tuple[float, float]], first: float, e_wc: float) -> float | None:
    cyc = np.array([h[0] for h in history], float)
    w = np.array([h[1] for h in history], float)
    n = len(cyc)
    if n < 2 or np.ptp(cyc) == 0 or not np.all(np.isfinite(w)) or not np.isfinite(first):
        return None
    r = w / first
    c, d = cyc - cyc.mean(), r - r.mean()
    u = U32
    dr = e_wc / abs(first) + 3 * u * np.max(np.abs(r))              # the test's own window charge; casts and division
    dd = 2 * dr + (n + 2) * u * np.max(np.abs(r))                     # minus the mean of rel
    dc = (n + 2) * u * np.max(np.abs(cyc))                            # minus the mean of cycles
    num, den = float(np.sum(c * d)), float(np.sum(c * c))
    dnum = float(np.sum(np.abs(c) * dd + np.abs(d) * dc) + (n + 1) * u * np.sum(np.abs(c * d)))
    dden = float(np.sum(2 * np.abs(c) * dc) + (n + 1) * u * den)
    slope = num / den * 100.0
    return 100.0 * (dnum / den + abs(num) * dden / den ** 2) + 2 * u * abs(slope)


def _analyse(t: np.ndarray, i: np.ndarray, v: np.ndarray, temp: np.ndarray, step: np.ndarray, history_after: list,
             first: float | None, expected: dict[str, float], spec: BatteryFeatureSpec) -> _Analysis:
    u = U32
    lo, hi = spec.window_v
    grid, dv, g, w, e = spec.grid(), spec.dv, spec.grid_points, spec.smooth_points, spec.smooth_points
    dg = GRID_ROUNDING * u * max(abs(lo), abs(hi))
    problems: list[str] = []
    ch = np.flatnonzero(step == "slow_charge")
    tc, ic_a, vc = t[ch], i[ch].astype(np.float64), v[ch].astype(np.float64)
    dq = np.concatenate([[0.0], -0.5 * (ic_a[1:] + ic_a[:-1]) * np.diff(tc) / 3600.0])
    q = np.cumsum(dq)
    vmax = np.maximum.accumulate(vc)
    tol: dict[str, tuple[float, float] | None] = {}
    if len(vmax) < 2 or vmax[0] > lo or vmax[-1] < hi:
        return _Analysis({}, [], ["the slow charge does not cover the voltage window: no curve"], {})
    if abs(vmax[0] - lo) <= dg or abs(vmax[-1] - hi) <= dg:
        problems.append("the charge starts or ends within float32 rounding of a window end: covered or not depends on the last bit")
    vmax, q = collapse_plateaus(vmax, q)  # one point per voltage level, as every implementation interpolates
    # a grid voltage within float32 rounding of two or more samples: q there depends on the grid's last bit
    # (grid_v[0] is float32(lo) in any implementation: only its own float32 rounding counts)
    dg_k = np.full(g, dg)
    dg_k[0] = abs(float(np.float32(lo)) - lo)
    a_idx = np.searchsorted(vmax, grid - dg_k, side="left")
    b_idx = np.searchsorted(vmax, grid + dg_k, side="right")
    for k in np.flatnonzero((b_idx - a_idx >= 2) & (dg_k > 0)):
        jump = q[b_idx[k] - 1] - q[a_idx[k]]
        if jump != 0.0:
            problems.append(f"grid point {k} ({grid[k]:.6f} V) lies within float32 rounding of "
                            f"{b_idx[k] - a_idx[k]} voltage levels ({jump * 1000:.3f} mAh): its charge depends on the grid's last bit")
    # charge integration and interpolation, per grid point k
    n = len(q)
    j = np.minimum(np.searchsorted(vmax, grid, side="right") - 1, n - 1)  # the segment [j, j + 1] holding grid_v[k]
    nxt = np.minimum(j + 1, n - 1)
    seg = np.where(np.diff(vmax) > 0, np.diff(q) / np.where(np.diff(vmax) > 0, np.diff(vmax), 1.0), 0.0)  # dq/dv per segment
    seg = np.r_[seg, 0.0]  # (a grid point at the last sample has no segment after it)
    slope = seg[j]  # the segment holding grid_v[k]; and its neighbour where a sample is within rounding of grid_v[k]
    slope = np.maximum(slope, np.where((np.abs(vmax[j] - grid) <= dg) & (j > 0), seg[np.maximum(j - 1, 0)], 0.0))
    slope = np.maximum(slope, np.where(np.abs(vmax[nxt] - grid) <= dg, seg[nxt], 0.0))
    q_abs = float(np.max(np.abs(q)))
    t_abs = float(np.max(np.abs(tc)))
    i_abs = float(np.max(np.abs(ic_a)))
    i_tv = float(np.sum(np.abs(np.diff(ic_a))))
    e_time = u * t_abs * (2 * i_abs + i_tv) / 3600.0          # float32 time stamps, telescoped over a run
    dg_use = np.where(np.arange(g) == 0, u * abs(lo), dg)       # grid_v[0] is float32(lo)
    e_q = slope * dg_use + 3 * u * q_abs                        # grid voltage rounding x steepness; f * (q1 - q0) + q0

    def e_diff(k0, k1):  # |error| of q(grid_v[k1]) - q(grid_v[k0]): the additions between them and both ends
        return e_q[k0] + e_q[k1] + (j[k1] - j[k0] + 1 + 4) * u * q_abs + e_time

    q_grid = q_on_grid(t[ch], i[ch].astype(np.float64), v[ch].astype(np.float64), spec)
    ic_raw = np.gradient(q_grid, dv)
    ic = ic_curve(q_grid, spec)
    ks = np.arange(1, g - 1)
    e_grad = np.empty(g)
    e_grad[1:-1] = e_diff(ks - 1, ks + 1) / (2 * dv)
    e_grad[0], e_grad[-1] = e_diff(0, 1) / dv, e_diff(g - 2, g - 1) / dv
    e_grad += 3 * u * np.abs(ic_raw)                             # the difference, 2 * dv, the division
    half = w // 2
    win = [slice(max(0, k - half), min(g, k + half + 1)) for k in range(g)]
    e_ic = np.array([e_grad[sl].max() + (w + 1) * u * np.abs(ic_raw[sl]).max() for sl in win])  # a mean of w values
    e_wc = e_diff(0, g - 1)
    wc = expected["window_charge_ah"]
    tol["window_charge_ah"] = (e_wc, 0.0)
    fw = first if first is not None else wc
    tol["window_charge_vs_first"] = (e_wc / abs(fw), 2 * u)
    tb = _trend_bound(history_after, fw, e_wc)
    tol["fade_trend_per_100"] = None if tb is None else (tb, 0.0)
    # peaks: a decision is ambiguous where two values are closer than both their error bounds
    alternatives: list[dict] = []

    def decide(name: str, values: np.ndarray, err: np.ndarray, best: int, allowed: np.ndarray, group: str, base: int = 0):
        close = np.flatnonzero(allowed & (values >= values[best] - SAFETY * (err[best] + err)))
        far_ties = close[np.abs(close - best) > 1]
        if len(far_ties):
            problems.append(f"{name}: grid points {best + base} and {int(far_ties[0]) + base} are closer than the float32 error bound")
        for sh in (-1, 1):
            if best + sh in close:
                alternatives.append({"group": group, "shift": sh,
                                     "expected": {k: _num(x) for k, x in _peak_group_values(best + sh, group, q_grid, ic, spec, p1).items()}})

    def around(p: int, m: int) -> slice:
        return slice(max(0, p - 1), min(m, p + 2))

    p1 = int(np.argmax(ic))
    decide("the IC peak", ic, e_ic, p1, np.ones(g, bool), "ic_peak")
    dist = np.abs(grid - grid[p1])
    for p in {p1 - 1, p1, p1 + 1} & set(range(g)):
        d = np.abs(grid - grid[p])
        if np.any(np.abs(d - spec.peak_separation_v) <= 2 * dg) or np.any(np.abs(d - spec.peak_half_width_v) <= 2 * dg):
            problems.append("a grid point lies within float32 rounding of the peak separation or half width")
    far = dist >= spec.peak_separation_v
    p2 = int(np.argmax(np.where(far, ic, -np.inf)))
    decide("the second IC peak", ic, e_ic, p2, far, "ic_peak2")
    inner = 1.0 / np.maximum(ic[e:-e], 1e-9)
    e_dvdq = e_ic[e:-e] * inner ** 2                             # d(1/x) = dx / x^2
    pd = int(np.argmax(inner))
    decide("the dV/dQ peak", inner, e_dvdq, pd, np.ones(len(inner), bool), "dvdq_peak", base=e)
    # bounds at the peak and at its neighbours (alternatives are judged with the same tolerance)
    p2_alt = [int(np.argmax(np.where(np.abs(grid - grid[p]) >= spec.peak_separation_v, ic, -np.inf)))
              for p in range(max(0, p1 - 1), min(g, p1 + 2))]
    tol["ic_peak_v"] = tol["ic_peak2_v"] = (dg, 0.0)
    tol["ic_peak_height"] = (float(e_ic[around(p1, g)].max()), 0.0)
    tol["ic_peak2_height"] = (float(max(e_ic[around(p, g)].max() for p in [p2] + p2_alt)), 0.0)
    hw_n = int(np.sum(dist <= spec.peak_half_width_v + 1e-12))
    reach = slice(max(0, p1 - hw_n), min(g, p1 + hw_n + 1))     # the near points of p1 and its neighbours
    tol["ic_peak_area_ah"] = (dv * hw_n * (float(e_ic[reach].max()) + hw_n * u * float(np.abs(ic[reach]).max())), 3 * u)
    tol["dvdq_peak_q_ah"] = (float(max(e_diff(0, k + e) for k in range(max(0, pd - 1), min(len(inner), pd + 2)))), 0.0)
    tol["dvdq_peak_height"] = (float(e_dvdq[around(pd, len(inner))].max()), u)
    # PCA scores: the IC errors through each component, the casts, a G-term dot product
    if spec.embedding is not None:
        mean, comps = spec.embedding.arrays()
        for jj in range(3):
            if jj < len(comps):
                c = np.abs(comps[jj])
                tol[f"ic_pc{jj + 1}"] = (float(np.sum(c * e_ic) + u * np.sum(c * (np.abs(mean) + np.abs(ic - mean)))
                                               + (g + 1) * u * np.sum(np.abs((ic - mean) * comps[jj]))), 0.0)
            else:
                tol[f"ic_pc{jj + 1}"] = (0.0, 0.0)
    else:
        tol.update({f"ic_pc{jj + 1}": None for jj in range(3)})
    # resistance, temperature
    m = len(temp)
    t_mean = expected["temperature_c"]
    e_t = (m - 1) * u * float(np.mean(np.abs(temp.astype(np.float64)))) + u * abs(t_mean)
    tol["temperature_c"] = (e_t, 0.0)
    tol["r_pulse_mohm"] = (0.0, 4 * u)
    tk = t_mean + 273.15
    dtk = e_t + u * 273.15 + u * tk
    dinv = 1.0 / tk - 1.0 / T_REF_K
    d_dinv = dtk / tk ** 2 + u / tk + 2 * u / T_REF_K + u * abs(dinv)
    ea_r = spec.resistance_activation_j_mol / GAS_CONSTANT
    dx = ea_r * d_dinv + 4 * u * abs(ea_r * dinv)
    tol["r_pulse_25c_mohm"] = (0.0, 4 * u + dx + 3 * u)
    for k, x in expected.items():  # NaN expected (no resistance, no embedding): no tolerance, NaN required
        if x is None or (isinstance(x, float) and math.isnan(x)):
            tol[k] = None
    tol = {k: None if v is None else (SAFETY * v[0], SAFETY * v[1]) for k, v in tol.items()}
    cond = {"slow_charge_samples": int(n), "charge_scale_ah": q_abs, "steepest_segment_ah_per_v": float(slope.max()),
            "grid_rounding_v": dg, "max_ic_error_bound_ah_per_v": float(SAFETY * e_ic.max()),
            "window_charge_error_bound_ah": float(SAFETY * e_wc)}
    return _Analysis(tol, alternatives, problems, cond)


# ---- building the document ---------------------------------------------------------------------

def _per_cell(tests: pa.Table, samples: pa.Table):
    """(cell_id, [(test row, sample frame)]) in (cell, start) order; samples in time order."""
    meta = tests.sort_by([("cell_id", "ascending"), ("started_at", "ascending")]).to_pylist()
    s = samples.to_pandas()
    by_test = {tid: d.sort_values("time_s", kind="stable") for tid, d in s.groupby("test_id", sort=False)}
    cells: dict[str, list] = {}
    for row in meta:
        if row["test_id"] in by_test:
            cells.setdefault(row["cell_id"], []).append((row, by_test[row["test_id"]]))
    return cells


def _pick(ok: list[int], n_tests: int, per_cell: int) -> list[int]:
    """The cell's first test (if usable), its second, then evenly spread later ones up to the last."""
    if not ok or per_cell <= 0:
        return []
    wanted = [0, 1] + [int(round(x)) for x in np.linspace(1, n_tests - 1, max(per_cell - 1, 1))][1:]
    chosen: list[int] = []
    for k in wanted:
        cand = min((x for x in ok if x not in chosen), key=lambda x: (abs(x - k), x), default=None)
        if cand is not None and len(chosen) < per_cell:
            chosen.append(cand)
    return sorted(chosen)


def golden_vectors(tests: pa.Table, samples: pa.Table, spec: BatteryFeatureSpec, per_cell: int = 3,
                   max_vectors: int = 24) -> dict:
    """Golden vectors for one chemistry's definition from ingested reference tests (one fleet or several).

    Each cell's tests run through the float64 ``online_features`` in order (the state before
    each test is recorded); up to ``per_cell`` usable tests per cell become vectors (the first,
    the second, then spread to the last), taken round-robin over cells up to ``max_vectors``.
    """
    cells = _per_cell(tests, samples)
    per: list[list[dict]] = []
    excluded = []
    for cell_id, rows in cells.items():
        state = CellState()
        candidates = []
        for k, (row, d) in enumerate(rows):
            t = d["time_s"].to_numpy(np.float64)
            i = d["current_a"].to_numpy(np.float32)
            v = d["voltage_v"].to_numpy(np.float32)
            temp = d["temperature_c"].to_numpy(np.float32)
            step = d["step"].to_numpy().astype(object)
            before = copy.deepcopy(state)
            expected = online_features(t, i, v, temp, step, float(row["usage_cycles"]), state, spec)
            an = _analyse(t, i, v, temp, step, list(state.history), state.first_window_charge_ah, expected, spec)
            if an.problems:
                excluded.append({"test_id": row["test_id"], "reasons": an.problems})
                continue
            candidates.append((k, row, t, i, v, temp, step, before, expected, an))
        picked = set(_pick([c[0] for c in candidates], len(rows), per_cell))
        vecs = []
        for k, row, t, i, v, temp, step, before, expected, an in candidates:
            if k not in picked:
                continue
            vecs.append({
                "id": row["test_id"], "fleet": row["fleet"], "unit_id": row["unit_id"], "cell_id": cell_id, "test_index": k,
                "usage_cycles": int(row["usage_cycles"]),
                "inputs": {"time_s": [float(x) for x in t], "current_a": _f32_list(i), "voltage_v": _f32_list(v),
                           "temperature_c": _f32_list(temp), "step_runs": _runs(step)},
                "state_before": {"first_window_charge_ah": _num(before.first_window_charge_ah),
                                 "history": [[float(c), _num(wc)] for c, wc in before.history]},
                "expected": {name: _num(expected[name]) for name in FEATURE_NAMES},
                "tolerance": {name: None if an.tolerance.get(name) is None else
                              {"abs": an.tolerance[name][0], "rel": an.tolerance[name][1]} for name in FEATURE_NAMES},
                "alternatives": an.alternatives,
                "condition": an.condition,
            })
        per.append(vecs)
    vectors = []
    for rank in range(max((len(x) for x in per), default=0)):  # round-robin: as many cells as the budget allows
        for vecs in per:
            if rank < len(vecs) and len(vectors) < max_vectors:
                vectors.append(vecs[rank])
    vectors.sort(key=lambda x: (x["cell_id"], x["test_index"]))
    return {
        "format": FORMAT,
        "chemistry": spec.chemistry,
        "features_version": FEATURES_VERSION,
        "definition_version": spec.version,
        "feature_names": list(FEATURE_NAMES),
        "spec": spec_document(spec),
        "input_dtypes": INPUT_DTYPES,
        "conventions": CONVENTIONS,
        "tolerance_model": {"unit_roundoff": U32, "safety_factor": SAFETY, "grid_rounding_ulps": GRID_ROUNDING,
                            "rule": "|got - expected| <= abs + rel * |expected|",
                            "basis": "first-order float32 rounding-error bounds per vector (see avops/battery/golden.py)"},
        "peak_groups": {k: list(v) for k, v in PEAK_GROUPS.items()},
        "vectors": vectors,
        "excluded": excluded,
    }


def merge(docs: list[dict]) -> dict:
    """One document from several of the same definition (e.g. one per fleet of a chemistry)."""
    if not docs:
        raise ValueError("no golden-vector documents to merge")
    head = docs[0]
    for d in docs[1:]:
        if (d["format"], d["chemistry"], d["definition_version"]) != (head["format"], head["chemistry"], head["definition_version"]):
            raise ValueError(f"cannot merge golden vectors of {d['chemistry']} {d['definition_version']} into "
                             f"{head['chemistry']} {head['definition_version']}: one definition per document")
    out = {k: v for k, v in head.items() if k not in ("vectors", "excluded")}
    out["vectors"] = [v for d in docs for v in d["vectors"]]
    out["excluded"] = [e for d in docs for e in d["excluded"]]
    ids = [v["id"] for v in out["vectors"]]
    if len(set(ids)) != len(ids):
        raise ValueError("the documents share vectors: merge each fleet's document once")
    return out


def _nan_to_null(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_null(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _nan_to_null(obj.item())
    return obj


def write_golden_vectors(doc: dict) -> bytes:
    """Canonical JSON: sorted keys, no spaces, NaN as null, floats as their shortest round-trip repr."""
    return json.dumps(_nan_to_null(doc), sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True).encode() + b"\n"


def read_golden_vectors(data: bytes | str) -> dict:
    doc = json.loads(data)
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a golden-vector document: format {doc.get('format')!r}, expected {FORMAT!r}")
    return doc


# ---- checking an implementation --------------------------------------------------------------

Implementation = Callable[..., dict]


@dataclass
class GoldenReport:
    vectors: int = 0
    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: dict[str, float] = field(default_factory=dict)
    max_tolerance_used: dict[str, float] = field(default_factory=dict)  # max |error| / tolerance (<= 1 passes)
    failures: list[dict] = field(default_factory=list)
    peak_shifts: list[dict] = field(default_factory=list)  # where an alternative (one grid step off) matched

    @property
    def ok(self) -> bool:
        return self.vectors > 0 and not self.failures

    passed = ok

    @property
    def max_errors(self) -> dict[str, dict[str, float]]:
        """Per feature: max |error|, max relative error, max share of the tolerance used."""
        fin = lambda x: x if math.isfinite(x) else None  # noqa: E731 (JSON metadata)
        return {k: {"abs": fin(self.max_abs_error[k]), "rel": fin(self.max_rel_error.get(k, 0.0)),
                    "tolerance_used": fin(self.max_tolerance_used.get(k, 0.0))} for k in FEATURE_NAMES if k in self.max_abs_error}

    def as_dict(self) -> dict:
        return {"ok": self.ok, "vectors": self.vectors, "max_errors": self.max_errors, "failures": self.failures,
                "peak_shifts": self.peak_shifts}

    def summary(self) -> str:
        lines = [f"{self.vectors} vectors, {len(self.failures)} failures, {len(self.peak_shifts)} peak shifts"]
        for k in FEATURE_NAMES:
            if k in self.max_abs_error:
                lines.append(f"  {k:24s} max abs {self.max_abs_error[k]:.3g}  rel {self.max_rel_error[k]:.3g}  "
                             f"tolerance used {self.max_tolerance_used.get(k, 0.0):.3g}")
        for f in self.failures[:20]:
            lines.append(f"  FAIL {f['vector']} {f['feature']}: {f.get('detail', '')}")
        return "\n".join(lines)


def _judge(name: str, got: float, expected: float | None, tol: dict | None) -> tuple[bool, float, str]:
    """(passes, |error| / tolerance, detail)."""
    if expected is None:
        return (math.isnan(got), 0.0 if math.isnan(got) else math.inf, f"expected NaN (null), got {got!r}")
    if math.isnan(got):
        return False, math.inf, f"expected {expected!r}, got NaN"
    err = abs(got - expected)
    limit = tol["abs"] + tol["rel"] * abs(expected) if tol else 0.0
    used = err / limit if limit > 0 else (0.0 if err == 0 else math.inf)
    return err <= limit, used, f"expected {expected!r}, got {got!r}, |error| {err:.3g} > tolerance {limit:.3g}"


def check_against_golden(doc: dict, implementation: Implementation) -> GoldenReport:
    """Run ``implementation(time_s, current_a, voltage_v, temperature_c, step, usage_cycles, state, spec)`` on
    every vector; report per-feature maximum errors and every failure."""
    spec = spec_from_golden(doc)
    rep = GoldenReport()
    groups = doc.get("peak_groups", PEAK_GROUPS)
    for vec in doc["vectors"]:
        rep.vectors += 1
        inp = vector_inputs(vec)
        state = inp.pop("state")
        try:
            got = implementation(inp["time_s"], inp["current_a"], inp["voltage_v"], inp["temperature_c"], inp["step"],
                                 inp["usage_cycles"], state, spec)
        except Exception as e:  # the harness reports, it does not stop at the first broken vector
            rep.failures.append({"vector": vec["id"], "feature": "*", "detail": f"raised {type(e).__name__}: {e}"})
            continue
        exp, tols = vec["expected"], vec["tolerance"]
        verdict = {}
        for name in FEATURE_NAMES:
            g = float(got.get(name, math.nan)) if name in got else math.nan
            verdict[name] = _judge(name, g, exp[name], tols[name])
            if exp[name] is not None and not math.isnan(g):
                err = abs(g - exp[name])
                rep.max_abs_error[name] = max(rep.max_abs_error.get(name, 0.0), err)
                rep.max_rel_error[name] = max(rep.max_rel_error.get(name, 0.0), err / abs(exp[name]) if exp[name] else err)
                rep.max_tolerance_used[name] = max(rep.max_tolerance_used.get(name, 0.0), verdict[name][1])
        failed = {n for n, (ok, _, _) in verdict.items() if not ok}
        for group, names in groups.items():  # a peak one grid step off: the whole group must match an alternative
            if not failed & set(names):
                continue
            for alt in (a for a in vec.get("alternatives", []) if a["group"] == group):
                if all(_judge(n, float(got.get(n, math.nan)), alt["expected"][n], tols[n])[0] for n in names):
                    failed -= set(names)
                    rep.peak_shifts.append({"vector": vec["id"], "group": group, "shift": alt["shift"]})
                    break
        for name in FEATURE_NAMES:
            if name in failed:
                rep.failures.append({"vector": vec["id"], "feature": name, "detail": verdict[name][2]})
        # the state the BMS keeps for the next test
        if state.first_window_charge_ah is None or not state.history or state.history[-1][0] != inp["usage_cycles"] \
                or len(state.history) > spec.trend_tests:
            rep.failures.append({"vector": vec["id"], "feature": "state",
                                 "detail": "the cell state was not updated (first window charge set, history appended and trimmed)"})
    return rep
