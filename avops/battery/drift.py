"""Battery feature drift that tells aging from a real change.

Cells age by design: capacity fades, incremental capacity peaks shrink, resistance grows. A
test of today's features against the training data's early tests therefore always fires, and a
test against all training rows fires as soon as the fleet is older than its training data. So
each feature is judged against the **expected trajectory at the test's own age** (usage
cycles), fitted per chemistry at training time (:class:`AgingReference`):

* trajectory: per age bin (consecutive test ages pooled until a bin has ``min_bin_rows`` tests)
  the median of the feature and its spread (1.4826 x MAD, smoothed over neighbouring bins),
  joined piecewise-linearly. Medians and MADs ignore a few broken tests; no functional form is
  assumed (fade decelerates, resistance grows almost linearly, the dV/dQ peak jumps when
  another peak takes over); and with reference tests every N cycles each bin is one test age,
  so no curve is imposed on the data at all. A polynomial would bend to outliers and explode
  when extrapolated; it is not used;
* residual: ``(value - median(age)) / spread(age)``; dividing by the spread of that age makes
  residuals of young and old cells comparable (cells diverge as they age), so a fleet whose
  tests sit at other ages than the training tests is still compared like with like;
* per fleet: fleets of one chemistry age at different rates per cycle (temperature, depth of
  discharge, C-rate: a 30 °C storage fleet's resistance grows faster than a 16 °C vehicle
  fleet's). A chemistry-wide trajectory is a mixture of them, and at ages only one fleet has
  reached it *is* that fleet's aging: vehicle tests at 160–200 cycles compared with the only
  training tests that old, those of the hot storage cells, look "below the trajectory" although
  nothing changed. So a fleet that was trained on with at least ``MIN_REFERENCE_CELLS`` cells is
  judged against its **own** trajectory (fitted on its own training tests only, stored in the
  reference) and its own cross-fitted training residuals; beyond its last training age the
  trajectory continues linearly along its last segment, up to the reference's margin (a quarter
  of the chemistry's age span) beyond the fleet's *own* ages: what another fleet did at older
  ages says nothing about this one. Newer tests further out are not judged until the reference
  is refitted. A fleet that was not trained on (or with too few cells) is judged against the
  chemistry-wide trajectory and every training row of the chemistry;
* reference sample: the baseline rows' residuals (the fleet's own, or every training row's).

Residuals are compared with the project's KS engine (:mod:`avops.drift.ks`: Benjamini–Hochberg
over the features, effect and sample floors). Tests of one cell are not independent (a cell that
fades fast does so at every test), so three slow-fading held-out cells give a "significant" D of
0.7 over their 24 tests. A shift therefore counts as drift only when it is also carried by
cells: at least ``min_cells`` of the fleet's cells must have a median residual beyond the
training cells' own (median ± 2 SD; training residuals are cross-fitted by cell so that they
are as wide as a new cell's). Fewer cells or tests than the floors give ``insufficient``, never
a pass. Ages beyond the fitted range (the fleet's own, for a fleet with its own trajectory) plus
a margin are not judged (an extrapolated trajectory is a guess). The raw comparison with each
training cell's first test (day one) is reported beside the verdict, never deciding it, so a
reader sees what the naive test would have said.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from avops.drift.ks import DriftPolicy, Reference, detect_drift

if TYPE_CHECKING:
    from avops.battery.config import BatteryConfig
    from avops.home import HomeLayout
    from avops.store import ObjectStore

FORMAT = "avops-battery-aging-reference/2"  # /2: per-fleet trajectories; /1 (chemistry-wide only) is still read
FORMATS = ("avops-battery-aging-reference/1", FORMAT)
AGE = "usage_cycles"

# The features aging moves steadily (window_charge_ah also carries the manufacturing spread; vs_first
# removes it). Not by default: dvdq_peak_q_ah, ic_peak_v and the dV/dQ height jump when another peak
# takes over as the cell ages (2.7 Ah -> 0.07 Ah within 20 cycles), a switch the trajectory of the
# median cannot follow, so their residual tests flag aging itself; pass them explicitly if wanted.
DEFAULT_FEATURES = ("window_charge_vs_first", "ic_peak_height", "ic_peak_area_ah", "r_pulse_25c_mohm")

# A fleet has tens of tests per cell, not millions of samples: a small sample floor, and an effect
# floor that asks for a shift of a large part of the distribution (see the module docstring).
BATTERY_POLICY = DriftPolicy(alpha=0.01, min_effect=0.5, min_samples=12)

MAD_TO_SIGMA = 1.4826
CELL_ENVELOPE_SD = 2.0
MIN_REFERENCE_CELLS = 3  # below this the training cells' spread is unknown


@dataclass(frozen=True)
class Trajectory:
    """One feature's expected value and spread as a function of age: piecewise linear between knots."""

    ages: tuple[float, ...]
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    rows: tuple[int, ...]  # training tests behind each knot

    @classmethod
    def fit(cls, age: np.ndarray, value: np.ndarray, min_bin_rows: int) -> "Trajectory":
        ok = np.isfinite(age) & np.isfinite(value)
        age, value = age[ok], value[ok]
        if age.size == 0:
            raise ValueError("no finite training values")
        order = np.argsort(age, kind="stable")
        age, value = age[order], value[order]
        _, starts = np.unique(age, return_index=True)
        bounds = list(starts[1:]) + [age.size]
        bins, lo = [], 0
        for hi in bounds:  # whole test ages, pooled until the bin is large enough
            if hi - lo >= min_bin_rows:
                bins.append((lo, hi))
                lo = hi
        if lo < age.size:  # the oldest few join the last bin
            bins[-1:] = [(bins[-1][0] if bins else 0, age.size)]
        knots = [float(np.median(age[a:b])) for a, b in bins]
        centre = [float(np.median(value[a:b])) for a, b in bins]
        mad = np.array([MAD_TO_SIGMA * float(np.median(np.abs(value[a:b] - c))) for (a, b), c in zip(bins, centre)])
        if mad.size >= 3:  # a MAD of a few tests is noisy: running median over neighbouring knots
            padded = np.r_[mad[0], mad, mad[-1]]
            mad = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
        positive = mad[mad > 0]
        floor = 0.05 * float(np.median(positive)) if positive.size else max(1e-9, 1e-6 * float(np.median(np.abs(value))))
        scale = np.maximum(mad, max(floor, 1e-12))
        return cls(tuple(knots), tuple(centre), tuple(float(s) for s in scale), tuple(int(b - a) for a, b in bins))

    def _at(self, ys: tuple[float, ...], age: np.ndarray) -> np.ndarray:
        x, y = np.asarray(self.ages), np.asarray(ys)
        age = np.asarray(age, dtype=np.float64)
        if x.size == 1:
            return np.full(age.shape, y[0])
        out = np.interp(age, x, y)
        lo, hi = age < x[0], age > x[-1]  # linear extrapolation along the end segments
        out[lo] = y[0] + (age[lo] - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
        out[hi] = y[-1] + (age[hi] - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
        return out

    def expected(self, age: np.ndarray) -> np.ndarray:
        return self._at(self.centre, age)

    def spread(self, age: np.ndarray) -> np.ndarray:
        return np.maximum(self._at(self.scale, age), min(self.scale))

    def residuals(self, age: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Standardised: (value - expected) / spread, at each value's own age."""
        return (np.asarray(value, np.float64) - self.expected(age)) / self.spread(age)


def _cell_folds(cells: np.ndarray, min_bin_rows: int, k: int = 5) -> list[np.ndarray]:
    """Row masks of up to ``k`` folds of whole cells (deterministic); none when a fold's complement is too small.

    In-sample residuals are too small (the medians pass through the training cells themselves);
    a new cell is judged against a trajectory it did not shape, so the reference must be too.
    """
    uniq = np.unique(cells)
    if uniq.size < 2:
        return []
    fold_of = {c: i % min(k, uniq.size) for i, c in enumerate(uniq)}
    f = np.array([fold_of[c] for c in cells])
    masks = [f == i for i in range(min(k, uniq.size))]
    return masks if all((~m).sum() >= min_bin_rows for m in masks) else []


def _fit_trajectories(age: np.ndarray, cells: np.ndarray, values: dict[str, np.ndarray],
                      min_bin_rows: int) -> tuple[dict[str, Trajectory], dict[str, np.ndarray]]:
    """Each feature's trajectory over these rows, and the rows' residuals against it, cross-fitted by cell."""
    folds = _cell_folds(cells, min_bin_rows)
    trajs, res = {}, {}
    for f, v in values.items():
        trajs[f] = Trajectory.fit(age, v, min_bin_rows)
        res[f] = trajs[f].residuals(age, v)
        for held in folds:  # cross-fitted: a cell's residuals against a trajectory fitted without it
            res[f][held] = Trajectory.fit(age[~held], v[~held], min_bin_rows).residuals(age[held], v[held])
    return trajs, res


def _margin(age: np.ndarray, max_extrapolation: float | None) -> float:
    """Cycles beyond the fitted ages that are still judged: a quarter of the fitted age span unless given."""
    return float(0.25 * float(np.ptp(age)) if max_extrapolation is None else max_extrapolation)


def _traj_dict(t: Trajectory) -> dict:
    return {"ages": list(t.ages), "centre": list(t.centre), "scale": list(t.scale), "rows": list(t.rows)}


def _traj(d: dict) -> Trajectory:
    return Trajectory(tuple(d["ages"]), tuple(d["centre"]), tuple(d["scale"]), tuple(d["rows"]))


@dataclass(frozen=True)
class FleetAging:
    """One training fleet's own expected trajectories (its own tests only) and its own extrapolation margin."""

    trajectories: dict[str, Trajectory]
    age_range: tuple[float, float]
    max_extrapolation: float


def _fleet_aging(fleet: list[str], cells: np.ndarray, age: np.ndarray, values: dict[str, np.ndarray], min_bin_rows: int,
                 margin: float) -> tuple[dict[str, FleetAging], dict[str, np.ndarray]]:
    """Per training fleet with at least MIN_REFERENCE_CELLS cells: its own trajectories, judged up to ``margin`` cycles
    beyond its own training ages, and its rows' own residuals (cross-fitted by cell; NaN on the rows of fleets
    without an own trajectory).

    The margin is the reference's (a quarter of the chemistry's age span), not a quarter of the fleet's own span:
    new tests of a trained fleet always lie beyond its training ages, and with reference tests every 20 cycles a
    quarter of a vehicle fleet's ~150 cycles admits one test per cell, too few to judge anything.
    """
    fleets = np.asarray(fleet)
    own_res = {f: np.full(age.size, np.nan) for f in values}
    out: dict[str, FleetAging] = {}
    for name in sorted(set(fleet)):
        m = fleets == name
        if len(set(cells[m])) < MIN_REFERENCE_CELLS or m.sum() < min_bin_rows:
            continue
        try:
            trajs, res = _fit_trajectories(age[m], cells[m], {f: v[m] for f, v in values.items()}, min_bin_rows)
        except ValueError:  # a feature this fleet never measured: it keeps the chemistry's trajectory
            continue
        out[name] = FleetAging(trajs, (float(age[m].min()), float(age[m].max())), float(margin))
        for f in values:
            own_res[f][m] = res[f]
    return out, own_res


def _floats(a) -> list:
    return [None if not math.isfinite(float(x)) else float(x) for x in a]


def _array(a) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in a], dtype=np.float64)


@dataclass
class AgingReference:
    """Per chemistry: each monitored feature's expected trajectory and the training rows' residuals,
    and per training fleet with enough cells its own trajectories (``fleet_aging``).

    The training rows (fleet, cell, age, raw value, residual against the chemistry's trajectory and
    against their own fleet's) are kept: the residuals are the reference sample, the raw values of
    each cell's first test (day one) the naive baseline shown beside it.
    """

    chemistry: str
    features: tuple[str, ...]
    trajectories: dict[str, Trajectory]
    fleet: list[str]
    cell_id: list[str]
    age: np.ndarray
    values: dict[str, np.ndarray]
    residuals: dict[str, np.ndarray]
    min_bin_rows: int
    max_extrapolation: float  # cycles beyond the fitted ages that are still judged
    trained_until: float | None = None  # epoch seconds of the latest training test
    sources: dict = field(default_factory=dict)  # e.g. the feature tables' manifests
    fleet_aging: dict[str, FleetAging] = field(default_factory=dict)  # per training fleet with enough cells
    own_residuals: dict[str, np.ndarray] = field(default_factory=dict)  # each row against its own fleet's trajectory (NaN: none)

    @classmethod
    def fit(cls, rows: pd.DataFrame, chemistry: str | None = None, features: tuple[str, ...] = DEFAULT_FEATURES,
            min_bin_rows: int = 4, max_extrapolation: float | None = None, sources: dict | None = None) -> "AgingReference":
        """Fit from training rows (one per reference test: fleet, cell_id, chemistry, started_at, usage_cycles, features)."""
        chems = sorted(set(rows["chemistry"])) if "chemistry" in rows else []
        chemistry = chemistry or (chems[0] if len(chems) == 1 else None)
        if chemistry is None or any(c != chemistry for c in chems):
            raise ValueError(f"an aging reference is per chemistry; the rows have {chems or 'none'}")
        missing = [f for f in features if f not in rows]
        if missing:
            raise ValueError(f"the training rows lack the monitored features {missing}")
        if len(rows) < min_bin_rows:
            raise ValueError(f"{chemistry}: {len(rows)} training tests are too few for an aging trajectory (need {min_bin_rows})")
        age = rows[AGE].to_numpy(np.float64)
        cells = rows["cell_id"].astype(str).to_numpy()
        fleet = [str(x) for x in rows["fleet"]]
        values = {f: rows[f].to_numpy(np.float64) for f in features}
        trajs, res = _fit_trajectories(age, cells, values, min_bin_rows)
        margin = _margin(age, max_extrapolation)
        per_fleet, own_res = _fleet_aging(fleet, cells, age, values, min_bin_rows, margin)
        until = None
        if "started_at" in rows and len(rows):
            until = float(pd.Timestamp(rows["started_at"].max()).timestamp())
        return cls(chemistry, tuple(features), trajs, fleet, [str(x) for x in cells], age, values, res, int(min_bin_rows),
                   margin, until, dict(sources or {}), per_fleet, own_res)

    @property
    def age_range(self) -> tuple[float, float]:
        return float(self.age.min()), float(self.age.max())

    @property
    def fleets(self) -> list[str]:
        return sorted(set(self.fleet))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "chemistry": self.chemistry, "features": list(self.features), "age_column": AGE,
                "min_bin_rows": self.min_bin_rows, "max_extrapolation": self.max_extrapolation,
                "trained_until": self.trained_until, "sources": self.sources,
                "trajectories": {f: _traj_dict(t) for f, t in self.trajectories.items()},
                "fleets": {name: {"age_range": list(a.age_range), "max_extrapolation": a.max_extrapolation,
                                  "trajectories": {f: _traj_dict(t) for f, t in a.trajectories.items()}}
                           for name, a in sorted(self.fleet_aging.items())},
                "rows": {"fleet": list(self.fleet), "cell_id": list(self.cell_id), "age": _floats(self.age),
                         "values": {f: _floats(v) for f, v in self.values.items()},
                         "residuals": {f: _floats(v) for f, v in self.residuals.items()},
                         "own_residuals": {f: _floats(v) for f, v in self.own_residuals.items()}}}

    @classmethod
    def from_dict(cls, d: dict) -> "AgingReference":
        if d.get("format") not in FORMATS:
            raise ValueError(f"not an aging reference ({d.get('format')!r}, expected {FORMAT!r})")
        r = d["rows"]
        age, values = _array(r["age"]), {f: _array(v) for f, v in r["values"].items()}
        min_bin_rows = int(d["min_bin_rows"])
        if d["format"] == FORMAT:
            per_fleet = {name: FleetAging({f: _traj(t) for f, t in a["trajectories"].items()},
                                          (float(a["age_range"][0]), float(a["age_range"][1])), float(a["max_extrapolation"]))
                         for name, a in d["fleets"].items()}
            own_res = {f: _array(v) for f, v in r["own_residuals"].items()}
        else:  # /1 stored only the chemistry-wide trajectories: the fleets' own ones from its stored rows
            per_fleet, own_res = _fleet_aging(list(r["fleet"]), np.asarray(r["cell_id"], dtype=str), age, values, min_bin_rows,
                                              float(d["max_extrapolation"]))
        return cls(d["chemistry"], tuple(d["features"]), {f: _traj(t) for f, t in d["trajectories"].items()}, list(r["fleet"]),
                   list(r["cell_id"]), age, values, {f: _array(v) for f, v in r["residuals"].items()}, min_bin_rows,
                   float(d["max_extrapolation"]), d.get("trained_until"), dict(d.get("sources") or {}), per_fleet, own_res)

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal references, equal digests, across a round trip."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()


def reference_for_chemistry(home: HomeLayout, config: BatteryConfig, chemistry: str, store: ObjectStore | None = None,
                            features: tuple[str, ...] = DEFAULT_FEATURES) -> AgingReference:
    """The chemistry's aging reference from the same rows its SoH model trains on (every fleet's feature table)."""
    from avops.battery.pipeline import training_rows
    from avops.store import open_store

    X, _, manifests = training_rows(home, config, chemistry, store or open_store(home))
    return AgingReference.fit(X, chemistry, features, sources={"feature_tables": manifests})


# ---- evaluation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict: the aging-aware test that decides, the naive one beside it."""

    feature: str
    statistic: float  # KS D of the residuals (aging-aware)
    pvalue: float
    pvalue_adjusted: float  # Benjamini–Hochberg over the monitored features
    n_reference: int
    n_current: int
    drifted: bool
    status: str  # drift | consistent | insufficient
    reason: str
    median_residual: float  # in the feature's unit: how far the tests sit from the trajectory
    median_z: float  # in the trajectory's spreads
    shift_ages: tuple[float, float] | None  # ages of the tests outside the reference's central 90 %
    cells_departing: int  # current cells whose median residual lies beyond the training cells' (median ± 2 SD)
    naive_statistic: float  # KS D of raw values against the baseline cells' first tests (day one)
    naive_pvalue_adjusted: float
    naive_drifted: bool


@dataclass
class BatteryDriftResult:
    """One fleet against its chemistry's aging reference; ``to_dict`` is JSON-safe asset metadata."""

    chemistry: str
    fleet: str
    reference_digest: str
    baseline: str  # whose residuals the fleet is compared with
    verdict: str  # drift | no drift | insufficient
    drifted: bool
    features: list[FeatureDrift]
    reasons: list[str]
    rows: int
    cells: int
    ages: tuple[float, float] | None
    naive_ages: tuple[float, float] | None  # ages of the day-one tests the naive test compares with
    excluded: dict[str, int] = field(default_factory=dict)
    policy: dict = field(default_factory=dict)

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.feature == name)

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def naive_drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.naive_drifted]

    def to_dict(self) -> dict:
        def clean(o):
            if isinstance(o, float):
                return o if math.isfinite(o) else None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [clean(v) for v in o]
            return o
        return clean(asdict(self))


def _fmt_p(p: float) -> str:
    return f"{p:.1g}" if p < 0.01 else f"{p:.2f}"


def _span(lo: float, hi: float) -> str:
    return f"{lo:g} cycles" if lo == hi else f"{lo:g}–{hi:g} cycles"


def _cell_medians(cells, z: np.ndarray) -> np.ndarray:
    s = pd.Series(z).groupby(np.asarray(cells)).median()
    return s.to_numpy(np.float64)[np.isfinite(s.to_numpy(np.float64))]


def _envelope(summaries: np.ndarray, k: float = CELL_ENVELOPE_SD) -> tuple[float, float]:
    """Where a training cell sits: median ± k SD of the training cells' median residuals.

    The SD, not a robust spread: a fast-fading cell in the reference is a cell of the population,
    and it widens the envelope (but less than the training cells' min/max would).
    """
    if summaries.size < MIN_REFERENCE_CELLS:
        return -math.inf, math.inf
    med, sd = float(np.median(summaries)), float(np.std(summaries, ddof=1))
    return med - k * sd, med + k * sd


def _first_tests(cells: list[str], age: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Mask of each cell's first test (its begin of life: day one) among the rows ``among``."""
    df = pd.DataFrame({"cell": cells, "age": age})[among]
    mask = np.zeros(age.size, bool)
    mask[df.groupby("cell")["age"].idxmin().to_numpy()] = True
    return mask


def evaluate_fleet(reference: AgingReference, rows: pd.DataFrame, policy: DriftPolicy = BATTERY_POLICY, min_drifted: int = 1,
                   *, min_cells: int = 2, cell_sd: float = CELL_ENVELOPE_SD, new_only: bool = False) -> BatteryDriftResult:
    """Is one fleet's aging still the aging the reference was fitted on?

    ``rows``: the fleet's feature rows (all given, or with ``new_only`` those that started after
    the reference's latest training test). Residuals at each test's own age, against the fleet's
    own trajectory when it was trained on (else the chemistry's), are tested against the baseline
    residuals; the raw values against the baseline's earliest tests, for contrast.
    Fewer than ``min_cells`` cells or ``policy.min_samples`` tests give ``insufficient``, never a pass.
    """
    fleets = sorted(set(rows["fleet"])) if len(rows) else []
    if len(fleets) > 1:
        raise ValueError(f"evaluate one fleet at a time; the rows hold {fleets}")
    fleet = fleets[0] if fleets else "?"
    chems = set(rows["chemistry"]) if "chemistry" in rows and len(rows) else set()
    if chems - {reference.chemistry}:
        raise ValueError(f"{fleet}: rows of chemistry {sorted(chems)} against a {reference.chemistry} aging reference")
    excluded: dict[str, int] = {}
    if new_only and reference.trained_until is not None and len(rows):
        new = pd.to_datetime(rows["started_at"], utc=True) > pd.Timestamp(reference.trained_until, unit="s", tz="UTC")
        if (~new).sum():
            excluded["before the reference was fitted"] = int((~new).sum())
        rows = rows[new.to_numpy()]

    # A fleet trained on is judged against its own aging (fleets age at different rates; see the module docstring),
    # any other fleet against the chemistry's trajectory and every training test.
    own = np.array([f == fleet for f in reference.fleet], dtype=bool)
    mine = reference.fleet_aging.get(fleet)
    if mine is not None and own.sum() >= policy.min_samples:
        base, trajs, (lo, hi), margin = own, mine.trajectories, mine.age_range, mine.max_extrapolation
        ref_res = {f: reference.own_residuals[f][base] for f in reference.features}
        baseline = (f"fleet {fleet}'s own aging trajectory and its own training tests ({int(own.sum())} tests of "
                    f"{len(set(np.asarray(reference.cell_id)[own]))} cells at {_span(lo, hi)})")
        range_of = f"fleet {fleet}'s own training ages"
    else:
        base, trajs = np.ones(len(reference.fleet), bool), reference.trajectories
        (lo, hi), margin = reference.age_range, reference.max_extrapolation
        ref_res = {f: reference.residuals[f] for f in reference.features}
        baseline = (f"the {reference.chemistry} trajectory of every training fleet and every training test "
                    f"({len(reference.fleet)}, fleets {', '.join(reference.fleets)}"
                    + (f"; {fleet} was not trained on)" if not own.any() else
                       f"; {fleet}'s own {int(own.sum())} training tests of {len(set(np.asarray(reference.cell_id)[own]))} "
                       f"cell(s) are too few for its own trajectory)"))
        range_of = "the reference's ages"

    age = rows[AGE].to_numpy(np.float64) if len(rows) else np.zeros(0)
    inside = (age >= lo - margin) & (age <= hi + margin)
    if (~inside).sum():
        excluded[f"outside {range_of} {_span(lo, hi)} ± {margin:g}"] = int((~inside).sum())
    rows, age = rows[inside], age[inside]
    cells = int(rows["cell_id"].nunique()) if len(rows) else 0
    # day one: every training cell's first test of the chemistry (a fleet's own three are too few to show anything)
    every = np.ones(len(reference.fleet), bool)
    early = _first_tests(reference.cell_id, reference.age, every)

    feats = list(reference.features)
    ref_cells = np.asarray(reference.cell_id)[base]
    cur_cells = rows["cell_id"].astype(str).to_numpy()
    z = {f: trajs[f].residuals(age, rows[f].to_numpy(np.float64)) for f in feats}
    aware = {c.column: c for c in detect_drift(Reference.build(ref_res), z, policy)}
    naive_policy = replace(policy, min_samples=min(policy.min_samples, int(early.sum())))  # shown, never decides
    naive = {c.column: c for c in detect_drift(Reference.build({f: reference.values[f][early] for f in feats}),
                                               {f: rows[f].to_numpy(np.float64) for f in feats}, naive_policy)}
    early_ages = (float(reference.age[early].min()), float(reference.age[early].max())) if early.any() else None

    out, reasons = [], []
    n_ref_cells = len(set(ref_cells))
    few_cells = cells < min_cells or n_ref_cells < MIN_REFERENCE_CELLS
    few_why = (f"{cells} cell(s) < {min_cells}" if cells < min_cells else
               f"the baseline has {n_ref_cells} cell(s) < {MIN_REFERENCE_CELLS}: its cell-to-cell spread is unknown")
    for f in feats:
        c, n = aware[f], naive[f]
        zf = z[f]
        ok = np.isfinite(zf)
        med_z = float(np.median(zf[ok])) if ok.any() else math.nan
        med_r = med_z * float(np.median(trajs[f].spread(age[ok]))) if ok.any() else math.nan
        shift = None
        if ok.any():
            q05, q95 = np.nanquantile(ref_res[f], [0.05, 0.95])
            out_of = (zf > q95) if med_z >= 0 else (zf < q05)
            a = age[ok & out_of] if (ok & out_of).any() else age[ok]
            shift = (float(a.min()), float(a.max()))
        lo_env, hi_env = _envelope(_cell_medians(ref_cells, ref_res[f]), cell_sd)
        cur_med = _cell_medians(cur_cells, zf)
        departing = int((cur_med < lo_env).sum() if med_z < 0 else (cur_med > hi_env).sum())
        insufficient = few_cells or c.reason.startswith("too few") or c.method == "empty"
        drifted = c.drifted and not few_cells and departing >= min_cells
        status = "drift" if drifted else "insufficient" if insufficient else "consistent"
        naive_txt = f"naive D={n.statistic:.2f} vs day one" + (" would have fired" if n.drifted else "")
        if drifted:
            where = "below" if med_z < 0 else "above"
            why = (f"{f}: residuals shifted {where} the aging trajectory by D={c.statistic:.2f} (p={_fmt_p(c.pvalue_adjusted)}) "
                   f"at ages {_span(*shift)}: not explained by aging (median {med_z:+.1f} spreads, {med_r:+.3g}; "  # type: ignore[misc]
                   f"{departing} of {cells} cells beyond the training cells' spread)")
        elif c.drifted and not insufficient:
            why = (f"{f}: shifted (D={c.statistic:.2f}, p={_fmt_p(c.pvalue_adjusted)}) but within the training cells' "
                   f"cell-to-cell spread ({departing} of {cells} cells beyond it, {min_cells} needed); {naive_txt}")
        elif insufficient:
            why = f"{f}: cannot judge: " + (few_why if few_cells else c.reason)
        else:
            why = f"{f}: consistent with aging (D={c.statistic:.2f}, p={_fmt_p(c.pvalue_adjusted)}); {naive_txt}"
        out.append(FeatureDrift(f, c.statistic, c.pvalue, c.pvalue_adjusted, c.n_reference, c.n_current, drifted, status, why,
                                med_r, med_z, shift, departing, n.statistic, n.pvalue_adjusted, n.drifted))

    drifted = [f for f in out if f.drifted]
    unjudged = [f for f in out if f.status == "insufficient"]
    if len(drifted) >= min_drifted:
        verdict = "drift"
        reasons += [f.reason for f in drifted]
    elif unjudged:
        verdict = "insufficient"
        reasons.append(f"{len(rows)} tests of {cells} cell(s) cannot show the fleet's aging is unchanged "
                       f"(need {policy.min_samples} tests per feature and {min_cells} cells)")
        reasons += [f.reason for f in unjudged]
    else:
        verdict = "no drift"
        fired = [f.feature for f in out if f.naive_drifted]
        reasons.append(f"aging as expected: {len(rows)} tests of {cells} cells at ages {_span(float(age.min()), float(age.max()))}"
                       + (f"; a naive comparison with day one (the training cells' first tests, {_span(*early_ages)}) would have flagged "  # type: ignore[misc]
                          f"{', '.join(fired)}, all explained by the trajectory" if fired else ""))
        reasons += [f.reason for f in out if aware[f.feature].drifted]  # significant, but carried by too few cells
    if excluded:
        reasons.append("not judged: " + "; ".join(f"{n} tests {why}" for why, n in excluded.items()))
    return BatteryDriftResult(reference.chemistry, fleet, reference.digest, baseline, verdict, verdict == "drift", out, reasons,
                              int(len(rows)), cells, (float(age.min()), float(age.max())) if len(age) else None, early_ages,
                              excluded, asdict(policy))


# ---- for people ---------------------------------------------------------------------------------

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(x: float, width: int = 10) -> str:
    """A 0..1 value as a bar of unicode blocks (eighth-block resolution)."""
    if not math.isfinite(x):
        return " " * width
    units = int(round(min(max(x, 0.0), 1.0) * width * 8))
    full, part = divmod(units, 8)
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(width)


def drift_markdown(result: BatteryDriftResult) -> str:
    """The verdict, the aging-aware D per feature beside the naive one, and the reasons (asset metadata)."""
    ages = _span(*result.ages) if result.ages else "no ages"
    lines = [f"**{result.chemistry} / {result.fleet}: {result.verdict}** — {result.rows} tests of {result.cells} cells at {ages}; "
             f"compared with {result.baseline}", "",
             "| feature | aging-aware D | | p (BH) | verdict | naive D vs day one" + (f" ({_span(*result.naive_ages)})" if result.naive_ages else "")
             + " | |", "|---|---|---|---|---|---|---|"]
    for f in result.features:
        p = _fmt_p(f.pvalue_adjusted) if math.isfinite(f.pvalue_adjusted) else "–"
        lines.append(f"| {f.feature} | {f.statistic:.2f} | `{bar(f.statistic)}` | {p} | {'**drift**' if f.drifted else f.status} | "
                     f"{f.naive_statistic:.2f} | `{bar(f.naive_statistic)}`{' would fire' if f.naive_drifted else ''} |")
    lines += ["", *(f"- {r}" for r in result.reasons)]
    return "\n".join(lines)
