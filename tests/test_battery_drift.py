"""Aging-aware battery drift: aging is not drift, a real change is, too little data is no pass.

One small stationary NMC fleet is simulated with PyBaMM (8 cells, 8 reference tests each, every
20 cycles) into a temporary AVOPS home and run through ingest, embedding and feature table. The
reference is fitted on five cells; the other three (every third cell) are the held-out cells of
the same usage.
"""

import json

import numpy as np
import pytest
import yaml

from avops.battery.config import load_battery_config
from avops.battery.drift import AgingReference, drift_markdown, evaluate_fleet
from avops.fleet_registry import load_registry, project_root
from avops.home import layout

FLEET = "ess-drift-test"


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    from avops.battery import pipeline as bp
    from avops.battery.ingest import ingest_fleet
    from avops.fleet.battery import simulate_batteries

    root = tmp_path_factory.mktemp("battery_drift")
    raw = yaml.safe_load((project_root() / "config" / "battery.yaml").read_text())
    raw["fleets"] = {FLEET: {"kind": "stationary", "chemistry": "nmc", "ambient_c": 25, "temperature_spread_c": 0.5,
                             "fast_charge_share": 0.0, "depth_of_discharge": 0.9, "cycles_per_day": 1.0, "units": 4}}
    raw["simulation"]["profiles"] = {"test": {"cells_per_unit": 2, "stationary_units": 4, "reference_every": 20, "reference_tests": 8}}
    (root / "battery.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_battery_config(root / "battery.yaml")
    home = layout(str(root / "home"))
    simulate_batteries(cfg, load_registry(), home, profile="test", fleets=[FLEET], workers=2)
    ingest_fleet(home, cfg, FLEET)
    bp.fit_chemistry_embedding(home, cfg, "nmc")
    bp.build_feature_table(home, cfg, FLEET)
    _, X, _ = bp.load_feature_table(home, FLEET)
    return X


@pytest.fixture(scope="module")
def split(features):
    cells = sorted(features["cell_id"].unique())
    assert len(cells) == 8 and features.groupby("cell_id").size().eq(8).all()
    held = cells[::3]
    train = features[~features["cell_id"].isin(held)]
    test = features[features["cell_id"].isin(held)].reset_index(drop=True)
    return AgingReference.fit(train), train, test


def test_aging_of_held_out_cells_is_not_drift_but_fires_the_naive_test(split):
    ref, _, test = split
    res = evaluate_fleet(ref, test)
    assert res.verdict == "no drift" and not res.drifted, res.reasons
    assert res.rows == 24 and res.cells == 3 and res.ages == (0.0, 140.0)
    assert all(f.status == "consistent" for f in res.features)
    # the naive day-one comparison flags the features aging moves: that is what the trajectory removes
    assert {"window_charge_vs_first", "ic_peak_height", "ic_peak_area_ah"} <= set(res.naive_drifted)
    for name in res.naive_drifted:
        assert res.feature(name).naive_statistic > res.feature(name).statistic
    assert "naive comparison" in res.reasons[0]
    md = drift_markdown(res)
    assert "no drift" in md and "| ic_peak_height |" in md and "█" in md


@pytest.mark.parametrize("planted, scale, expect", [
    ({"r_pulse_25c_mohm"}, 1.30, {"r_pulse_25c_mohm"}),                    # resistance up 30 %
    ({"ic_peak_height", "ic_peak_area_ah"}, 0.80, {"ic_peak_height"}),      # the IC peak 20 % lower
])
def test_a_real_change_at_the_same_ages_is_drift(split, planted, scale, expect):
    ref, _, test = split
    changed = test.assign(**{f: test[f] * scale for f in planted})
    res = evaluate_fleet(ref, changed)
    assert res.verdict == "drift" and res.drifted
    assert expect <= set(res.drifted_features) <= planted
    f = res.feature(sorted(expect)[0])
    assert f.statistic >= 0.75 and f.pvalue_adjusted < 1e-6 and f.cells_departing == 3
    assert (f.median_z > 0) == (scale > 1)
    assert any("not explained by aging" in r and "cycles" in r for r in res.reasons)
    # the untouched features of the same rows stay consistent with aging
    assert all(x.status == "consistent" for x in res.features if x.feature not in planted)


def test_too_few_tests_or_cells_is_insufficient_not_a_pass(split):
    ref, _, test = split
    one_cell = test[test["cell_id"] == test["cell_id"].iloc[0]]
    few_tests = test[test["usage_cycles"] <= 20]  # 3 cells x 2 tests = 6 < 12
    too_old = test.assign(usage_cycles=test["usage_cycles"] + 1000)  # far beyond the fitted ages
    for rows in (one_cell, few_tests, too_old, test.iloc[:0]):
        res = evaluate_fleet(ref, rows)
        assert res.verdict == "insufficient" and not res.drifted, res.reasons
        assert all(f.status == "insufficient" for f in res.features)
    assert evaluate_fleet(ref, too_old).excluded and "outside the reference's ages" in evaluate_fleet(ref, too_old).reasons[-1]
    # a change in one cell only is not a fleet drift either
    bumped = one_cell.assign(r_pulse_25c_mohm=one_cell["r_pulse_25c_mohm"] * 1.3)
    assert evaluate_fleet(ref, bumped).verdict == "insufficient"
    # only tests that started after the latest training test: a handful at most
    assert evaluate_fleet(ref, test, new_only=True).verdict == "insufficient"


def test_reference_round_trips_with_its_digest(split):
    ref, train, test = split
    back = AgingReference.from_dict(json.loads(json.dumps(ref.to_dict(), allow_nan=False)))
    assert back.digest == ref.digest and len(ref.digest) == 64
    assert back.to_dict() == ref.to_dict()
    a, b = evaluate_fleet(ref, test), evaluate_fleet(back, test)
    assert a.to_dict() == b.to_dict() and a.reference_digest == ref.digest
    json.dumps(a.to_dict(), allow_nan=False)  # the result is asset metadata
    # the digest is the content: other training rows, another digest
    assert AgingReference.fit(train[train["usage_cycles"] <= 100]).digest != ref.digest
    t = ref.trajectories["ic_peak_height"]
    assert np.all(np.diff(t.centre) < 0) and t.ages[0] == 0.0  # the IC peak shrinks with age
