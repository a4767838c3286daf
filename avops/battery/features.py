"""Electrochemical features of a reference test, defined once and computed offline and online.

The definition (``BatteryFeatureSpec``, one per chemistry) fixes everything a result depends on:
the voltage window a BMS sees on a slow charge, the grid and smoothing of the incremental
capacity curve, the pulse the resistance comes from, the temperature normalisation, the trend
length and the PCA basis of the degradation embedding. Its digest is the features' version.

The curve maths (``curve_features``) works on one curve or a stack of curves alike; what differs
between the two computations is how samples become a charge-vs-voltage curve:

* offline (``offline_features``): every test of a fleet at once, one interpolation over the
  concatenated samples, point in time (a test's trend and first-test reference use only tests of
  the same cell that started no later than it);
* online (``online_features``): one cell's latest test plus the little state a BMS keeps (its
  first window charge and the last few (cycle, window charge) pairs), as the BMS computes it.

``avops.battery.bms_reference`` is the float32 implementation an embedded team ports; the golden
vectors (``avops.battery.golden``) pin both to the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avops.battery.config import Chemistry

FEATURES_VERSION = "1"
T_REF_K = 298.15
GAS_CONSTANT = 8.314462618

FEATURE_NAMES = (
    "window_charge_ah",        # charge accepted inside the voltage window (Ah): a partial capacity
    "window_charge_vs_first",  # the same, relative to the cell's first reference test (its begin of life)
    "fade_trend_per_100",      # slope of the window charge over the last tests (fraction of first / 100 cycles)
    "ic_peak_v",               # main incremental capacity (dQ/dV) peak: position (V)
    "ic_peak_height",          # its height (Ah/V)
    "ic_peak_area_ah",         # its area within ±peak_half_width_v (Ah)
    "ic_peak2_v",              # the second peak (at least peak_separation_v from the main one): position (V)
    "ic_peak2_height",         # its height (Ah/V)
    "dvdq_peak_q_ah",          # differential voltage (dV/dQ) peak inside the window: charge from the window start (Ah)
    "dvdq_peak_height",        # its height (V/Ah)
    "r_pulse_mohm",            # internal resistance from the 1C pulse (mΩ) at the test's temperature
    "r_pulse_25c_mohm",        # the same normalised to 25 °C (Arrhenius)
    "temperature_c",           # mean cell temperature during the test (°C)
    "ic_pc1", "ic_pc2", "ic_pc3",  # degradation embedding: the IC curve projected on the fitted PCA basis
)


@dataclass(frozen=True)
class Embedding:
    """PCA of incremental capacity curves, fitted offline; versioned with the definition."""

    mean: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]  # k x grid

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.mean, self.components]).encode()).hexdigest()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.mean), np.asarray(self.components)


@dataclass(frozen=True)
class BatteryFeatureSpec:
    chemistry: str
    window_v: tuple[float, float]
    grid_points: int = 64
    smooth_points: int = 5             # moving-average width on the grid (odd)
    peak_half_width_v: float = 0.02
    peak_separation_v: float = 0.06
    resistance_activation_j_mol: float = 20_000.0
    trend_tests: int = 4
    embedding: Embedding | None = field(default=None, compare=False)

    def canonical(self) -> str:
        d = asdict(self)
        d.pop("embedding")
        d["embedding"] = self.embedding.digest if self.embedding else None
        return json.dumps([FEATURES_VERSION, d], sort_keys=True)

    @property
    def version(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    def grid(self) -> np.ndarray:
        lo, hi = self.window_v
        return np.linspace(lo, hi, self.grid_points)

    @property
    def dv(self) -> float:
        lo, hi = self.window_v
        return (hi - lo) / (self.grid_points - 1)


def spec_for(chem: Chemistry, embedding: Embedding | None = None) -> BatteryFeatureSpec:
    return BatteryFeatureSpec(chem.name, chem.window_v, peak_separation_v=chem.peak_separation_v, embedding=embedding)


# ---- curve maths: one curve (G,) or a stack (n, G) -------------------------------------------

def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along the last axis; at the edges, the mean of the samples there are."""
    pad = [(0, 0)] * (x.ndim - 1) + [(width // 2, width // 2)]
    c = np.cumsum(np.pad(x, pad), axis=-1)
    c = np.concatenate([np.zeros(x.shape[:-1] + (1,)), c], axis=-1)
    num = c[..., width:] - c[..., :-width]
    ones = np.cumsum(np.r_[0.0, np.pad(np.ones(x.shape[-1]), width // 2)])
    return num / (ones[width:] - ones[:-width])


def ic_curve(q_grid: np.ndarray, spec: BatteryFeatureSpec) -> np.ndarray:
    """dQ/dV on the grid (Ah/V), smoothed."""
    return smooth(np.gradient(q_grid, spec.dv, axis=-1), spec.smooth_points)


def curve_features(q_grid: np.ndarray, spec: BatteryFeatureSpec) -> dict[str, np.ndarray]:
    """Everything that depends on the charge-vs-voltage curve alone."""
    q = np.atleast_2d(q_grid)
    grid = spec.grid()
    ic = ic_curve(q, spec)
    rows = np.arange(q.shape[0])
    p1 = np.argmax(ic, axis=-1)
    far = np.abs(grid[None, :] - grid[p1][:, None]) >= spec.peak_separation_v
    p2 = np.argmax(np.where(far, ic, -np.inf), axis=-1)
    near = np.abs(grid[None, :] - grid[p1][:, None]) <= spec.peak_half_width_v + 1e-12
    area = np.sum(np.where(near, ic, 0.0), axis=-1) * spec.dv
    # dV/dQ against charge: 1 / (dQ/dV), at the grid's charge positions; edges (a smoothing width) excluded
    e = spec.smooth_points
    dvdq = 1.0 / np.maximum(ic[:, e:-e], 1e-9)
    pd = np.argmax(dvdq, axis=-1)
    none = ~np.all(np.isfinite(q), axis=-1)  # no curve: positions are undefined, not the grid's first point
    out = {
        "window_charge_ah": q[:, -1] - q[:, 0],
        "ic_peak_v": grid[p1], "ic_peak_height": ic[rows, p1], "ic_peak_area_ah": area,
        "ic_peak2_v": grid[p2], "ic_peak2_height": ic[rows, p2],
        "dvdq_peak_q_ah": q[rows, pd + e] - q[:, 0], "dvdq_peak_height": dvdq[rows, pd],
    }
    for k in ("ic_peak_v", "ic_peak2_v", "dvdq_peak_q_ah"):
        out[k] = np.where(none, np.nan, out[k])
    if spec.embedding is not None:
        mean, comps = spec.embedding.arrays()
        z = (ic - mean) @ comps.T
        for j in range(3):
            out[f"ic_pc{j + 1}"] = z[:, j] if j < z.shape[1] else np.zeros(len(q))
    else:
        for j in range(3):
            out[f"ic_pc{j + 1}"] = np.full(len(q), np.nan)
    return out


def resistance(v_before: np.ndarray, v_end: np.ndarray, i_before: np.ndarray, i_end: np.ndarray, temp_c: np.ndarray,
               spec: BatteryFeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Pulse resistance (mΩ) and its 25 °C equivalent."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (v_before - v_end) / (i_end - i_before) * 1000.0
    t_k = temp_c + 273.15
    return r, r * np.exp(-spec.resistance_activation_j_mol / GAS_CONSTANT * (1.0 / t_k - 1.0 / T_REF_K))


def trend(cycles: np.ndarray, charge_rel: np.ndarray) -> float:
    """Least-squares slope of relative window charge per 100 cycles (NaN with fewer than 2 tests)."""
    if len(cycles) < 2 or np.ptp(cycles) == 0:
        return float("nan")
    c = cycles - cycles.mean()
    return float(np.sum(c * (charge_rel - charge_rel.mean())) / np.sum(c * c) * 100.0)


# ---- online: one test, as the BMS computes it --------------------------------------------------

@dataclass
class CellState:
    """What a BMS keeps between reference tests: its first window charge and the recent ones."""

    first_window_charge_ah: float | None = None
    history: list[tuple[float, float]] = field(default_factory=list)  # (usage cycles, window charge)


def collapse_plateaus(v: np.ndarray, q: np.ndarray, seg: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """One point per level of the (non-decreasing) voltage: the midpoint of the charge while it stayed there.

    Why: a BMS quantises voltage (0.1 mV here), so the running maximum repeats a level for several
    samples. Interpolating into such a plateau would depend on which side of the level a grid
    voltage rounds to (float32 and float64 disagree exactly there); one point per level removes
    the ambiguity. ``seg``: a segment id per sample (tests in a batch), plateaus never span two.
    """
    new = np.r_[True, v[1:] != v[:-1]] if seg is None else np.r_[True, (v[1:] != v[:-1]) | (seg[1:] != seg[:-1])]
    start = np.flatnonzero(new)
    end = np.r_[start[1:], len(v)] - 1
    out = (v[start], 0.5 * (q[start] + q[end]))
    return out if seg is None else (*out, seg[start])


def interpolate_segments(vu: np.ndarray, qu: np.ndarray, j: np.ndarray, x: np.ndarray) -> np.ndarray:
    """q at ``x`` on the segment ``(j, j + 1)``: the same formula online, offline and in the float32 reference."""
    return qu[j] + (x - vu[j]) / (vu[j + 1] - vu[j]) * (qu[j + 1] - qu[j])


def q_on_grid(time_s: np.ndarray, current_a: np.ndarray, voltage_v: np.ndarray, spec: BatteryFeatureSpec) -> np.ndarray:
    """Charge accepted (Ah) at each grid voltage of the slow-charge samples (current < 0 is charge)."""
    dq = np.concatenate([[0.0], -0.5 * (current_a[1:] + current_a[:-1]) * np.diff(time_s) / 3600.0])
    q = np.cumsum(dq)
    v = np.maximum.accumulate(voltage_v)  # sensor noise must not fold the curve back
    lo, hi = spec.window_v
    if len(v) < 2 or v[0] > lo or v[-1] < hi:  # the charge did not cross the whole window: no curve
        return np.full(spec.grid_points, np.nan)
    vu, qu = collapse_plateaus(v, q)
    grid = spec.grid()
    j = np.clip(np.searchsorted(vu, grid, side="right") - 1, 0, len(vu) - 2)
    return interpolate_segments(vu, qu, j, grid)


def _step_samples(step: np.ndarray, name: str) -> np.ndarray:
    idx = np.flatnonzero(step == name)
    if len(idx) == 0:
        raise ValueError(f"the reference test has no {name!r} samples")
    return idx


def online_features(time_s: np.ndarray, current_a: np.ndarray, voltage_v: np.ndarray, temperature_c: np.ndarray,
                    step: np.ndarray, usage_cycles: float, state: CellState, spec: BatteryFeatureSpec) -> dict[str, float]:
    """One test's features; ``state`` is updated (the BMS stores it for the next test)."""
    t, i, v = (np.asarray(a, np.float64) for a in (time_s, current_a, voltage_v))
    ch = _step_samples(step, "slow_charge")
    feats = {k: float(x[0]) for k, x in curve_features(q_on_grid(t[ch], i[ch], v[ch], spec), spec).items()}
    pulse = _step_samples(step, "pulse")
    before = pulse[0] - 1
    temp = float(np.mean(np.asarray(temperature_c, np.float64)))
    if before < 0:  # no sample before the pulse: no voltage to step from
        r, r25 = np.float64(np.nan), np.float64(np.nan)
    else:
        r, r25 = resistance(v[before], v[pulse[-1]], i[before], i[pulse[-1]], np.float64(temp), spec)
    feats.update(r_pulse_mohm=float(r), r_pulse_25c_mohm=float(r25), temperature_c=temp)
    wc = feats["window_charge_ah"]
    if state.first_window_charge_ah is None and math.isfinite(wc):  # begin of life: the first test with a curve
        state.first_window_charge_ah = wc
    if not math.isfinite(wc):  # no curve this time: nothing to add to the history
        feats["window_charge_vs_first"] = feats["fade_trend_per_100"] = float("nan")
        return {k: feats[k] for k in FEATURE_NAMES}
    state.history = (state.history + [(float(usage_cycles), wc)])[-spec.trend_tests:]
    feats["window_charge_vs_first"] = wc / state.first_window_charge_ah
    cyc = np.array([c for c, _ in state.history])
    rel = np.array([w for _, w in state.history]) / state.first_window_charge_ah
    feats["fade_trend_per_100"] = trend(cyc, rel)
    return {k: feats[k] for k in FEATURE_NAMES}


# ---- offline: every test of a fleet at once, point in time ------------------------------------

def _test_index(ids: pa.ChunkedArray, order: list[str]) -> np.ndarray:
    """Row of each sample's test in ``order`` (-1: not there). Samples come grouped by test, so only the
    first id of each run is looked up (a string hash per sample would dominate the batch)."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64)
    change = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.r_[0, np.flatnonzero(change) + 1]
    pos = {tid: k for k, tid in enumerate(order)}
    runs = np.array([pos.get(t, -1) for t in ids.take(pa.array(starts)).to_pylist()], np.int64)
    return np.repeat(runs, np.diff(np.r_[starts, n]))


def offline_features(tests: pa.Table, samples: pa.Table, spec: BatteryFeatureSpec) -> pa.Table:
    """One row per reference test (entity: cell, event time: started_at) with every feature."""
    import pyarrow.compute as pc

    meta = tests.sort_by([("cell_id", "ascending"), ("started_at", "ascending")])
    n, g = meta.num_rows, spec.grid_points
    s_test = _test_index(samples.column("test_id"), meta.column("test_id").to_pylist())
    t = samples.column("time_s").to_numpy()
    i = samples.column("current_a").to_numpy().astype(np.float64)
    v = samples.column("voltage_v").to_numpy().astype(np.float64)
    temp = samples.column("temperature_c").to_numpy().astype(np.float64)
    steps = pc.cast(samples.column("step"), pa.string())
    step = np.where(pc.equal(steps, "slow_charge").to_numpy(zero_copy_only=False), 0,
                    np.where(pc.equal(steps, "pulse").to_numpy(zero_copy_only=False), 1, -1))  # 0 charge, 1 pulse
    # samples in (test, time) order: the per-test segments the batched maths relies on (ingest writes them so)
    if len(s_test) and not (np.all(np.diff(s_test) >= 0) and np.all((np.diff(t) >= 0) | (np.diff(s_test) > 0))):
        srt = np.lexsort((t, s_test))
        s_test, t, i, v, temp, step = s_test[srt], t[srt], i[srt], v[srt], temp[srt], step[srt]
    keep = s_test >= 0
    # -- charge vs voltage for every test at once
    ch = keep & (step == 0)
    ct, cti, ctt, ctv = s_test[ch], i[ch], t[ch], v[ch]
    first = np.r_[True, ct[1:] != ct[:-1]]
    dq = np.where(first, 0.0, -0.5 * (cti + np.r_[cti[:1], cti[:-1]]) * np.diff(ctt, prepend=ctt[:1]) / 3600.0)
    q = np.cumsum(dq)
    q -= q[np.maximum.accumulate(np.where(first, np.arange(len(q)), 0))]  # restart the running sum at each test
    # the running maximum of voltage per test, exactly: on integer ranks (test-major), never on a float key
    levels, rank = np.unique(ctv, return_inverse=True)
    ikey = np.maximum.accumulate(ct.astype(np.int64) * len(levels) + rank)
    vrm = levels[ikey - ct.astype(np.int64) * len(levels)]
    vu, qu, tu = collapse_plateaus(vrm, q, ct)
    lo, hi = spec.window_v
    starts = np.searchsorted(tu, np.arange(n), side="left")
    ends = np.searchsorted(tu, np.arange(n), side="right") - 1
    has = ends > starts  # at least two levels
    covered = np.zeros(n, bool)
    covered[has] = (vu[starts[has]] <= lo) & (vu[ends[has]] >= hi)
    grid = spec.grid()
    q_grid = np.full((n, g), np.nan)
    rows = np.flatnonzero(covered)
    if len(rows):
        # the segment of each grid point inside its own test: a search per test, vectorised over tests
        span = 16.0  # any bound above the voltage range: only to find the segment, values come from vu itself
        key = tu * span + vu
        gk = rows[:, None] * span + grid[None, :]
        j = np.searchsorted(key, gk, side="right") - 1
        j = np.clip(j, starts[rows][:, None], ends[rows][:, None] - 1)
        q_grid[rows] = interpolate_segments(vu, qu, j, np.broadcast_to(grid, j.shape))
    feats = curve_features(q_grid, spec)
    # -- pulse resistance: the last sample before the pulse and the pulse's last sample
    pulse = keep & (step == 1)
    p_idx = np.flatnonzero(pulse)
    p_test = s_test[p_idx]
    p_first = p_idx[np.r_[True, p_test[1:] != p_test[:-1]]]
    p_last = p_idx[np.r_[p_test[1:] != p_test[:-1], True]]
    r = np.full(n, np.nan)
    r25 = np.full(n, np.nan)
    tmean = np.full(n, np.nan)
    cnt = np.bincount(s_test[keep], minlength=n)
    tmean[:] = np.bincount(s_test[keep], weights=temp[keep], minlength=n) / np.maximum(cnt, 1)
    ok = (p_first > 0) & (s_test[np.maximum(p_first - 1, 0)] == s_test[p_first])  # a sample of the same test before the pulse
    p_first, p_last = p_first[ok], p_last[ok]
    rt = s_test[p_first]
    r[rt], r25[rt] = resistance(v[p_first - 1], v[p_last], i[p_first - 1], i[p_last], tmean[rt], spec)
    feats.update(r_pulse_mohm=r, r_pulse_25c_mohm=r25, temperature_c=tmean)
    # -- history features, point in time per cell (tests are sorted by cell, then start); the BMS's history
    #    holds the tests that had a curve, so only those count, and each test sees its cell's last trend_tests
    cell_ids = meta.column("cell_id").combine_chunks()
    cyc = meta.column("usage_cycles").to_numpy().astype(np.float64)
    wc = feats["window_charge_ah"]
    rel_first = np.full(n, np.nan)
    tr = np.full(n, np.nan)
    fin = np.flatnonzero(np.isfinite(wc))
    if len(fin):
        new_cell = np.r_[True, pc.not_equal(cell_ids.slice(1), cell_ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)] if n > 1 else np.ones(1, bool)
        cell_code = np.cumsum(new_cell)[fin]
        first_of_cell = np.r_[True, cell_code[1:] != cell_code[:-1]]
        start = np.maximum.accumulate(np.where(first_of_cell, np.arange(len(fin)), 0))
        rel = wc[fin] / wc[fin][start]
        rel_first[fin] = rel
        k = spec.trend_tests
        win = np.arange(len(fin))[:, None] - np.arange(k - 1, -1, -1)[None, :]  # the last k tests up to each one
        ok = win >= start[:, None]
        win = np.where(ok, win, 0)
        x = np.where(ok, cyc[fin][win], 0.0)
        y = np.where(ok, rel[win], 0.0)
        cnt = ok.sum(axis=1)
        xc = np.where(ok, x - (x.sum(axis=1) / cnt)[:, None], 0.0)
        yc = np.where(ok, y - (y.sum(axis=1) / cnt)[:, None], 0.0)
        sxx = (xc * xc).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tr[fin] = np.where((cnt >= 2) & (sxx > 0), (xc * yc).sum(axis=1) / sxx * 100.0, np.nan)
    feats["window_charge_vs_first"] = rel_first
    feats["fade_trend_per_100"] = tr
    cols = {c: meta.column(c) for c in ("test_id", "fleet", "unit_id", "cell_id", "chemistry", "started_at", "usage_cycles")}
    cols.update({name: pa.array(np.asarray(feats[name], np.float64)) for name in FEATURE_NAMES})
    return pa.table(cols)


# ---- the embedding, fitted offline ------------------------------------------------------------

def fit_embedding(q_grids: np.ndarray, spec: BatteryFeatureSpec, components: int = 3) -> Embedding:
    """PCA (SVD) of the smoothed IC curves; sign fixed so that a component's largest loading is positive."""
    ic = ic_curve(q_grids[np.all(np.isfinite(q_grids), axis=1)], spec)
    if len(ic) < components + 1:
        raise ValueError(f"{spec.chemistry}: {len(ic)} complete curves are too few to fit a {components}-component embedding")
    mean = ic.mean(axis=0)
    _, _, vt = np.linalg.svd(ic - mean, full_matrices=False)
    comps = vt[:components]
    comps *= np.sign(comps[np.arange(components), np.argmax(np.abs(comps), axis=1)])[:, None]
    r = lambda a: tuple(float(round(x, 12)) for x in a)  # noqa: E731 (stable digests across platforms)
    return Embedding(r(mean), tuple(r(c) for c in comps))


def q_grids_offline(tests: pa.Table, samples: pa.Table, spec: BatteryFeatureSpec) -> np.ndarray:
    """The charge-vs-voltage curves of every test (rows in ``offline_features`` order), for fitting."""
    bare = BatteryFeatureSpec(spec.chemistry, spec.window_v, spec.grid_points, spec.smooth_points, spec.peak_half_width_v,
                              spec.peak_separation_v, spec.resistance_activation_j_mol, spec.trend_tests, None)
    meta = tests.sort_by([("cell_id", "ascending"), ("started_at", "ascending")])
    grids = []
    s = samples.to_pandas()
    for tid in meta.column("test_id").to_pylist():
        d = s[(s.test_id == tid) & (s.step == "slow_charge")].sort_values("time_s")
        grids.append(q_on_grid(d.time_s.to_numpy(), d.current_a.to_numpy(np.float64), d.voltage_v.to_numpy(np.float64), bare))
    return np.asarray(grids)
