"""The online battery features in float32, written the way the BMS firmware computes them.

The BMS does not run Python: its firmware computes a reference test's features in C, in single
precision, on a microcontroller. This module is what that C port is checked against: the
definition of ``avops.battery.features.online_features`` written a second time, independently
of ``features.py``'s maths, and the way a C port is written: every array and every arithmetic
operation in ``np.float32`` (constants cast first), one explicit step at a time (trapezoid charge
integration, running-max voltage, linear interpolation onto the grid, central differences, a
windowed moving average, argmax peaks, sums, dV/dQ, pulse resistance, Arrhenius normalisation,
trend over the kept history, PCA projection), sums accumulated left to right like a C loop (no
cumulative-sum differencing, no pairwise summation, nothing in float64).

Only the definition's data types come from ``features.py`` (``BatteryFeatureSpec``,
``CellState``, ``FEATURE_NAMES`` and the two physical constants), so a mistake in the float64
maths is not silently shared. ``avops.battery.golden`` pins both this and any C port to the
float64 results within float32 rounding-error bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avops.battery.features import FEATURE_NAMES, GAS_CONSTANT, T_REF_K, BatteryFeatureSpec, CellState

F = np.float32
NAN = F(np.nan)


@dataclass(frozen=True)
class Constants32:
    """Every constant of the definition, cast to float32 once (what the C port keeps in flash)."""

    lo: np.float32
    hi: np.float32
    grid_points: int
    dv: np.float32
    grid: np.ndarray           # (G,) float32: lo + k * dv
    smooth_points: int
    peak_half_width: np.float32
    peak_separation: np.float32
    ea_over_r: np.float32      # resistance activation energy / gas constant (K)
    inv_t_ref: np.float32      # 1 / 298.15 K
    kelvin: np.float32         # 273.15
    trend_tests: int
    pca_mean: np.ndarray | None        # (G,) float32
    pca_components: np.ndarray | None  # (k, G) float32


def constants(spec: BatteryFeatureSpec) -> Constants32:
    lo, hi = F(spec.window_v[0]), F(spec.window_v[1])
    g = spec.grid_points
    dv = (hi - lo) / F(g - 1)
    grid = lo + np.arange(g, dtype=F) * dv
    mean = comps = None
    if spec.embedding is not None:
        mean = np.asarray(spec.embedding.mean, F)
        comps = np.asarray(spec.embedding.components, F).reshape(-1, g)
    return Constants32(lo, hi, g, dv, grid, spec.smooth_points, F(spec.peak_half_width_v), F(spec.peak_separation_v),
                       F(spec.resistance_activation_j_mol) / F(GAS_CONSTANT), F(1.0) / F(T_REF_K), F(273.15),
                       spec.trend_tests, mean, comps)


# ---- the steps ---------------------------------------------------------------------------------

def accumulate(x: np.ndarray) -> np.ndarray:
    """Running sum, left to right, in float32 (``acc += x[k]``)."""
    return np.add.accumulate(np.asarray(x, F), dtype=F)


def total(x: np.ndarray) -> np.float32:
    """Sum left to right in float32 (a C loop; numpy's own ``sum`` is pairwise)."""
    x = np.asarray(x, F)
    return accumulate(x)[-1] if len(x) else F(0.0)


def charge_ah(time_s: np.ndarray, current_a: np.ndarray) -> np.ndarray:
    """Charge accepted since the first sample (Ah), trapezoid rule; a negative current is charge."""
    dt = time_s[1:] - time_s[:-1]
    dq = F(-0.5) * (current_a[1:] + current_a[:-1]) * dt / F(3600.0)
    return accumulate(np.concatenate([np.zeros(1, F), dq]))


def running_max(x: np.ndarray) -> np.ndarray:
    """Voltage that never falls back (sensor noise must not fold the curve)."""
    return np.maximum.accumulate(x)


def collapse_plateaus(v: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One point per voltage level: ``q = (q_first + q_last) / 2`` of the samples that read that level.

    Quantised readings repeat a level; a C loop keeps the level, its first and its last charge.
    """
    new = np.concatenate([np.ones(1, bool), v[1:] != v[:-1]])
    start = np.flatnonzero(new)
    end = np.concatenate([start[1:], [len(v)]]) - 1
    return v[start], (F(0.5) * (q[start] + q[end])).astype(F)


def interpolate(grid: np.ndarray, v: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear interpolation of q(v) at each grid voltage; ``v`` strictly increasing (plateaus collapsed) and covering the grid.

    Segment: the last level with ``v[j] <= g`` (at most the second to last), like a C loop that
    walks forward while ``v[j + 1] <= g``; value ``q[j] + (g - v[j]) / (v[j+1] - v[j]) * (q[j+1] - q[j])``.
    """
    j = np.clip(np.searchsorted(v, grid, side="right") - 1, 0, len(v) - 2)
    return (q[j] + (grid - v[j]) / (v[j + 1] - v[j]) * (q[j + 1] - q[j])).astype(F)


def charge_on_grid(time_s: np.ndarray, current_a: np.ndarray, voltage_v: np.ndarray, c: Constants32) -> np.ndarray | None:
    """Charge (Ah) at each grid voltage of the slow charge; None where the charge misses part of the window."""
    q = charge_ah(time_s, current_a)
    v = running_max(voltage_v)
    if len(v) < 2 or v[0] > c.lo or v[-1] < c.hi:
        return None
    vu, qu = collapse_plateaus(v, q)
    return interpolate(c.grid, vu, qu)


def derivative(y: np.ndarray, h: np.float32) -> np.ndarray:
    """dy/dx on an evenly spaced grid: central differences inside, one-sided at both ends."""
    out = np.empty(len(y), F)
    out[1:-1] = (y[2:] - y[:-2]) / (F(2.0) * h)
    out[0] = (y[1] - y[0]) / h
    out[-1] = (y[-1] - y[-2]) / h
    return out


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred mean of ``width`` samples; near the ends, the mean of the samples that exist."""
    n, half = len(x), width // 2
    acc = np.zeros(n, F)
    count = np.zeros(n, F)
    k = np.arange(n)
    for o in range(-half, half + 1):  # adds x[k - half] ... x[k + half] in order; a missing sample adds 0 (exact)
        ok = (k + o >= 0) & (k + o < n)
        acc = acc + np.where(ok, x[np.clip(k + o, 0, n - 1)], F(0.0))
        count = count + ok.astype(F)
    return acc / count


def argmax(x: np.ndarray, allowed: np.ndarray | None = None) -> int:
    """Index of the first largest value (among ``allowed``): ``if (x[k] > best)`` over k."""
    return int(np.argmax(x if allowed is None else np.where(allowed, x, F(-np.inf))))


def trend_per_100(history: list[tuple[float, float]], first: np.float32) -> np.float32:
    """Least-squares slope of window charge / first window charge over usage cycles, per 100 cycles."""
    n = len(history)
    cyc = np.array([h[0] for h in history], F)
    rel = np.array([h[1] for h in history], F) / first
    if n < 2 or cyc.max() == cyc.min():
        return NAN
    c = cyc - total(cyc) / F(n)
    d = rel - total(rel) / F(n)
    return total(c * d) / total(c * c) * F(100.0)


# ---- one test ---------------------------------------------------------------------------------

def curve_features32(q: np.ndarray | None, c: Constants32) -> dict[str, np.float32]:
    names = ("window_charge_ah", "ic_peak_v", "ic_peak_height", "ic_peak_area_ah", "ic_peak2_v", "ic_peak2_height",
             "dvdq_peak_q_ah", "dvdq_peak_height", "ic_pc1", "ic_pc2", "ic_pc3")
    if q is None:  # the charge did not cross the whole window: no curve, no curve feature
        return {k: NAN for k in names}
    ic = moving_average(derivative(q, c.dv), c.smooth_points)
    grid = c.grid
    p1 = argmax(ic)
    dist = np.abs(grid - grid[p1])
    p2 = argmax(ic, dist >= c.peak_separation)
    near = dist <= c.peak_half_width + F(1e-12)  # as defined (the 1e-12 vanishes in float32)
    area = total(ic[near]) * c.dv
    e = c.smooth_points
    inner = ic[e:len(ic) - e]
    dvdq = F(1.0) / np.maximum(inner, F(1e-9))
    pd = argmax(dvdq)
    out = {"window_charge_ah": q[-1] - q[0], "ic_peak_v": grid[p1], "ic_peak_height": ic[p1], "ic_peak_area_ah": area,
           "ic_peak2_v": grid[p2], "ic_peak2_height": ic[p2],
           "dvdq_peak_q_ah": q[pd + e] - q[0], "dvdq_peak_height": dvdq[pd]}
    for j in range(3):
        if c.pca_components is None:
            out[f"ic_pc{j + 1}"] = NAN
        elif j < len(c.pca_components):
            out[f"ic_pc{j + 1}"] = total((ic - c.pca_mean) * c.pca_components[j])
        else:
            out[f"ic_pc{j + 1}"] = F(0.0)
    return out


def _indices(step: np.ndarray, name: str) -> np.ndarray:
    idx = np.flatnonzero(np.asarray(step) == name)
    if len(idx) == 0:
        raise ValueError(f"the reference test has no {name!r} samples")
    return idx


def online_features(time_s: np.ndarray, current_a: np.ndarray, voltage_v: np.ndarray, temperature_c: np.ndarray,
                    step: np.ndarray, usage_cycles: float, state: CellState, spec: BatteryFeatureSpec,
                    consts: Constants32 | None = None) -> dict[str, float]:
    """One test's features in float32 (same signature and state update as ``features.online_features``)."""
    c = consts or constants(spec)
    t, i, v, temp = (np.asarray(a, F) for a in (time_s, current_a, voltage_v, temperature_c))
    ch = _indices(step, "slow_charge")
    feats = curve_features32(charge_on_grid(t[ch], i[ch], v[ch], c), c)
    # pulse resistance: the last sample before the pulse and the pulse's last sample
    pulse = _indices(step, "pulse")
    b, e = pulse[0] - 1, pulse[-1]
    with np.errstate(divide="ignore", invalid="ignore"):  # no current step: no resistance (inf / NaN, as defined)
        r = (v[b] - v[e]) / (i[e] - i[b]) * F(1000.0) if b >= 0 else F(np.nan)  # no sample before the pulse: none
    t_mean = total(temp) / F(len(temp))
    x = -c.ea_over_r * (F(1.0) / (t_mean + c.kelvin) - c.inv_t_ref)
    feats.update(r_pulse_mohm=r, r_pulse_25c_mohm=r * np.exp(x), temperature_c=t_mean)
    # history: the first window charge and the last trend_tests (cycles, window charge) pairs
    wc = feats["window_charge_ah"]
    if not np.isfinite(wc):  # no curve this time: the history is not extended
        feats["window_charge_vs_first"] = feats["fade_trend_per_100"] = F(np.nan)
        return {k: float(F(feats[k])) for k in FEATURE_NAMES}
    if state.first_window_charge_ah is None:
        state.first_window_charge_ah = float(wc)
    first = F(state.first_window_charge_ah)
    state.history = (list(state.history) + [(float(usage_cycles), float(wc))])[-c.trend_tests:]
    feats["window_charge_vs_first"] = wc / first
    feats["fade_trend_per_100"] = trend_per_100(state.history, first)
    return {k: float(F(feats[k])) for k in FEATURE_NAMES}


online_features_f32 = online_features  # the name callers outside this module use for the float32 implementation
