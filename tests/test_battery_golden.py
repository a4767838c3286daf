"""Battery features: golden vectors pin the float32 BMS reference to the float64 definition; offline = online.

One small stationary fleet (2 storage units, one cell each, 6 reference tests) runs through the
real pipeline (PyBaMM simulation, BMS logs, ingest) once per session.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from avops.battery import bms_reference
from avops.battery.config import load_battery_config
from avops.battery.features import (FEATURE_NAMES, CellState, fit_embedding, offline_features, online_features, q_grids_offline,
                                    spec_for)
from avops.battery.golden import (FORMAT, check_against_golden, golden_vectors, merge, read_golden_vectors, spec_from_golden,
                                  vector_inputs, write_golden_vectors)
from avops.battery.ingest import ingest_fleet, load_reference_tests
from avops.fleet.battery import simulate_batteries
from avops.fleet_registry import load_registry, project_root
from avops.home import layout

FLEET = "ess-nmc-tx"
UNITS = 2
TESTS_PER_CELL = 6


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> SimpleNamespace:
    """The fleet's ingested tables and its chemistry's definition (embedding fitted on the fleet)."""
    root = tmp_path_factory.mktemp("battery")
    raw = yaml.safe_load((project_root() / "config" / "battery.yaml").read_text())
    raw["fleets"] = {FLEET: {**raw["fleets"][FLEET], "units": UNITS}}
    raw["simulation"]["profiles"] = {"demo": {"cells_per_unit": 1, "stationary_units": UNITS, "reference_every": 20,
                                              "reference_tests": TESTS_PER_CELL}}
    path = root / "battery.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_battery_config(path)
    home = layout(root / "home")
    simulate_batteries(config, load_registry(), home, fleets=[FLEET], workers=1)
    ingest_fleet(home, config, FLEET)
    _, tests, samples = load_reference_tests(home, FLEET)
    chem = config.chemistry_of(FLEET)
    bare = spec_for(chem)
    spec = spec_for(chem, fit_embedding(q_grids_offline(tests, samples, bare), bare))
    return SimpleNamespace(tests=tests, samples=samples, spec=spec)


@pytest.fixture(scope="session")
def golden(fleet) -> dict:
    return golden_vectors(fleet.tests, fleet.samples, fleet.spec, per_cell=4)


def _online_all(tests: pa.Table, samples: pa.Table, spec, implementation=online_features) -> dict[str, dict[str, float]]:
    """Every test through an online implementation, cell by cell in start order (the BMS's view)."""
    s = samples.to_pandas()
    out, states = {}, {}
    for row in tests.sort_by([("cell_id", "ascending"), ("started_at", "ascending")]).to_pylist():
        d = s[s.test_id == row["test_id"]].sort_values("time_s")
        out[row["test_id"]] = implementation(d.time_s.to_numpy(), d.current_a.to_numpy(), d.voltage_v.to_numpy(),
                                             d.temperature_c.to_numpy(), d.step.to_numpy(), float(row["usage_cycles"]),
                                             states.setdefault(row["cell_id"], CellState()), spec)
    return out


def _same(a: float, b: float, rel: float) -> bool:
    """Equal within ``rel`` relative, floored at 1 (PCA scores near zero are differences of large projections)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0)


# ---- golden vectors --------------------------------------------------------------------------

def test_golden_vectors_cover_first_and_later_tests_of_several_cells(fleet, golden):
    assert golden["format"] == FORMAT and golden["chemistry"] == "nmc"
    assert golden["definition_version"] == fleet.spec.version
    assert spec_from_golden(golden) == fleet.spec and spec_from_golden(golden).embedding == fleet.spec.embedding
    vecs = golden["vectors"]
    assert len({v["cell_id"] for v in vecs}) == UNITS
    firsts = [v for v in vecs if v["test_index"] == 0]
    assert firsts, "no cell's first test among the vectors"
    for v in firsts:
        assert v["state_before"] == {"first_window_charge_ah": None, "history": []}
        assert v["expected"]["fade_trend_per_100"] is None and v["tolerance"]["fade_trend_per_100"] is None
        assert v["expected"]["window_charge_vs_first"] == 1.0
    later = [v for v in vecs if v["test_index"] >= 2]
    assert later and all(len(v["state_before"]["history"]) >= 2 and v["expected"]["fade_trend_per_100"] is not None for v in later)
    for v in vecs:
        for name in FEATURE_NAMES:
            tol = v["tolerance"][name]
            assert tol is None or (tol["abs"] >= 0 and tol["rel"] >= 0 and tol["abs"] + tol["rel"] > 0), (v["id"], name)
        # float32 tolerances: wider than float64 noise, far tighter than the feature itself
        wc, tol = v["expected"]["window_charge_ah"], v["tolerance"]["window_charge_ah"]
        assert 1e-7 * wc < tol["abs"] < 1e-3 * wc
    # every input the definition needs is there and round-trips to the float32 samples
    inp = vector_inputs(vecs[0])
    assert inp["current_a"].dtype == np.float32 and inp["time_s"].dtype == np.float64
    assert set(inp["step"]) >= {"slow_charge", "pulse"} and len(inp["step"]) == len(inp["time_s"])


def test_float32_reference_matches_golden_vectors(golden):
    report = check_against_golden(golden, bms_reference.online_features_f32)
    assert report.vectors == len(golden["vectors"])
    assert report.passed, report.summary()
    json.dumps(report.as_dict(), allow_nan=False)  # the report is JSON metadata as it stands
    assert set(report.max_abs_error) == set(FEATURE_NAMES)
    # it is a float32 implementation: not bit-identical to float64, yet well inside the bounds
    assert max(report.max_rel_error.values()) > 1e-9
    assert max(report.max_tolerance_used.values()) < 1.0


def test_float64_definition_matches_its_own_golden_vectors_exactly(golden):
    report = check_against_golden(golden, online_features)
    assert report.ok, report.summary()
    assert max(report.max_abs_error.values()) == 0.0


def test_float32_reference_is_float32_throughout(fleet):
    c = bms_reference.constants(fleet.spec)
    assert c.grid.dtype == np.float32 and c.pca_components.dtype == np.float32 and isinstance(c.dv, np.float32)
    t = np.arange(100, dtype=np.float64) * 60.0
    i = np.full(100, -0.5, np.float32)
    v = np.linspace(3.3, 4.2, 100).astype(np.float32)
    q = bms_reference.charge_on_grid(t.astype(np.float32), i, v, c)
    assert q.dtype == np.float32
    ic = bms_reference.moving_average(bms_reference.derivative(q, c.dv), c.smooth_points)
    assert ic.dtype == np.float32


@pytest.mark.parametrize("perturbation", ["smoothing width 3", "float16 results", "float16 arithmetic"])
def test_a_perturbed_implementation_fails_the_check(golden, perturbation, monkeypatch):
    if perturbation == "smoothing width 3":
        def impl(*args):
            return bms_reference.online_features(*args[:-1], dataclasses.replace(args[-1], smooth_points=3))
        expect = {"ic_peak_height", "ic_peak_area_ah", "dvdq_peak_height", "ic_pc1"}
    elif perturbation == "float16 results":
        def impl(*args):
            return {k: float(np.float16(x)) for k, x in bms_reference.online_features(*args).items()}
        expect = {"window_charge_ah", "r_pulse_mohm", "temperature_c"}
    else:
        monkeypatch.setattr(bms_reference, "F", np.float16)  # every array and constant of the reference in half precision

        def impl(*args):
            with np.errstate(all="ignore"):  # time stamps overflow float16 (> 65504 s): that is the point
                return bms_reference.online_features(*args)
        expect = {"window_charge_ah", "ic_peak_height"}
    report = check_against_golden(golden, impl)
    assert not report.ok
    failed = {f["feature"] for f in report.failures}
    assert expect <= failed or "*" in failed, (perturbation, sorted(failed))


def test_golden_document_round_trips_through_canonical_json_with_nan_as_null(golden):
    data = write_golden_vectors(golden)

    def no_constants(token):  # strict JSON: no NaN / Infinity tokens anywhere
        raise AssertionError(f"{token} in the document")

    json.loads(data, parse_constant=no_constants)
    doc = read_golden_vectors(data)
    assert write_golden_vectors(doc) == data  # canonical: parse + write is the identity
    assert json.loads(data) == doc
    first = next(v for v in doc["vectors"] if v["test_index"] == 0)
    assert first["expected"]["fade_trend_per_100"] is None  # NaN as null
    assert check_against_golden(doc, bms_reference.online_features).ok
    # a NaN smuggled into a document is written as null too
    bad = copy.deepcopy(golden)
    bad["vectors"][0]["expected"]["ic_pc1"] = float("nan")
    assert read_golden_vectors(write_golden_vectors(bad))["vectors"][0]["expected"]["ic_pc1"] is None
    # damaged constants are refused rather than checked against
    bad = read_golden_vectors(data)
    bad["spec"]["smooth_points"] = 3
    with pytest.raises(ValueError, match="definition"):
        check_against_golden(bad, bms_reference.online_features)


def test_documents_of_one_definition_merge(fleet, golden):
    cells = sorted(set(fleet.tests.column("cell_id").to_pylist()))
    parts = []
    for cell in cells:
        tests = fleet.tests.filter(pc.equal(fleet.tests.column("cell_id"), cell))
        samples = fleet.samples.filter(pc.is_in(fleet.samples.column("test_id"), tests.column("test_id")))
        parts.append(golden_vectors(tests, samples, fleet.spec, per_cell=4))
    merged = merge(parts)
    assert [v["id"] for v in merged["vectors"]] == [v["id"] for v in golden["vectors"]]
    assert merged["vectors"] == golden["vectors"]
    assert check_against_golden(merged, bms_reference.online_features).passed
    with pytest.raises(ValueError, match="share vectors"):
        merge([golden, golden])
    other = golden_vectors(fleet.tests, fleet.samples, dataclasses.replace(fleet.spec, trend_tests=3), per_cell=1)
    with pytest.raises(ValueError, match="one definition per document"):
        merge([golden, other])


def test_a_voltage_plateau_at_a_grid_voltage_no_longer_splits_float32_from_float64(fleet):
    """Quantised readings that sit exactly on a grid voltage (3.7 V, also a 0.1 mV level of the BMS front end).

    Before plateaus were collapsed to one point per level, q there depended on which side of the level
    the grid's last bit fell (float32 3.70000005 above it, float64 3.6999999999999997 below): two
    samples' charge (~17 mAh) apart, ~1 Ah/V in the IC curve. Now both interpolate the same level, the
    test is vectorised like any other, and the float32 reference reproduces it within tolerance.
    """
    s = fleet.samples.to_pandas()
    victim = fleet.tests.column("test_id")[1].as_py()
    grid = fleet.spec.grid()
    k = 21  # 3.5 + 21 * 0.6 / 63 = 3.7 V
    level = np.float32(grid[k])
    rows = s.index[(s.test_id == victim) & (s.step == "slow_charge")]
    v = s.loc[rows, "voltage_v"].to_numpy()
    j = int(np.searchsorted(np.maximum.accumulate(v), level))
    s.loc[rows[j:j + 3], "voltage_v"] = level  # three samples of the charge read exactly that level
    s.loc[rows[j + 3:], "voltage_v"] = np.maximum(s.loc[rows[j + 3:], "voltage_v"].to_numpy(), level)
    samples = pa.Table.from_pandas(s, preserve_index=False)
    doc = golden_vectors(fleet.tests, samples, fleet.spec, per_cell=TESTS_PER_CELL)
    assert victim not in {e["test_id"] for e in doc["excluded"]}
    a = _online_all(fleet.tests, samples, fleet.spec)[victim]
    b = _online_all(fleet.tests, samples, fleet.spec, bms_reference.online_features)[victim]
    assert max(abs(a[k] - b[k]) for k in ("ic_peak_height", "ic_peak2_height")) < 0.01
    assert check_against_golden(doc, bms_reference.online_features).passed


# ---- offline = online, point in time ---------------------------------------------------------------

def test_offline_matches_online_on_every_test(fleet):
    off = offline_features(fleet.tests, fleet.samples, fleet.spec).to_pylist()
    on = _online_all(fleet.tests, fleet.samples, fleet.spec)
    assert len(off) == len(on) == UNITS * TESTS_PER_CELL
    bad = [(row["test_id"], k, row[k], on[row["test_id"]][k]) for row in off for k in FEATURE_NAMES
           if not _same(row[k], on[row["test_id"]][k], 1e-9)]
    assert not bad, bad[:5]
    assert sum(math.isnan(row["fade_trend_per_100"]) for row in off) == UNITS  # only first tests lack a trend


def test_features_are_point_in_time(fleet):
    """A test's features do not change when later tests of its cell are removed from (or added to) the tables."""
    full = {r["test_id"]: r for r in offline_features(fleet.tests, fleet.samples, fleet.spec).to_pylist()}
    meta = fleet.tests.sort_by([("cell_id", "ascending"), ("started_at", "ascending")])
    for cell in sorted(set(meta.column("cell_id").to_pylist())):
        mine = meta.filter(pc.equal(meta.column("cell_id"), cell))
        for k in range(1, mine.num_rows):
            cut = mine.column("started_at")[k - 1]
            later = pc.and_(pc.equal(meta.column("cell_id"), cell), pc.greater(meta.column("started_at"), cut))
            tests = meta.filter(pc.invert(later))
            samples = fleet.samples.filter(pc.is_in(fleet.samples.column("test_id"), tests.column("test_id")))
            part = offline_features(tests, samples, fleet.spec).to_pylist()
            assert len(part) == meta.num_rows - (mine.num_rows - k)
            for row in part:
                for name in FEATURE_NAMES:
                    assert _same(row[name], full[row["test_id"]][name], 1e-9), (cell, k, row["test_id"], name)
    # row order of the inputs does not matter either
    rng = np.random.default_rng(0)
    shuffled = fleet.samples.take(rng.permutation(fleet.samples.num_rows))
    tests = fleet.tests.take(rng.permutation(fleet.tests.num_rows))
    for row in offline_features(tests, shuffled, fleet.spec).to_pylist():
        assert all(_same(row[n], full[row["test_id"]][n], 1e-9) for n in FEATURE_NAMES), row["test_id"]
