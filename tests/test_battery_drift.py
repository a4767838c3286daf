"""Aging-aware battery drift: aging is not drift, a real change is, too little data is no pass.

One small stationary NMC fleet is simulated with PyBaMM (8 cells, 8 reference tests each, every
20 cycles) into a temporary AVOPS home and run through ingest, embedding and feature table. The
reference is fitted on five cells; the other three (every third cell) are the held-out cells of
the same usage. A second, faster-aging fleet is derived from the same cells (their tests at 3/4 of
the cycles: 4/3 the aging per cycle, as a hotter or harder-cycled fleet) without another simulation.
"""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import yaml

from avops.battery.config import load_battery_config
from avops.battery.drift import FORMAT, AgingReference, drift_markdown, evaluate_fleet
from avops.drift.ks import DriftPolicy
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
    assert evaluate_fleet(ref, too_old).excluded and f"outside fleet {FLEET}'s own training ages" in evaluate_fleet(ref, too_old).reasons[-1]
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


@pytest.fixture(scope="module")
def two_rates(features):
    """The slow fleet trained up to 80 cycles; a fleet aging 4/3 as fast per cycle trained up to 105 cycles."""
    fast = features.assign(fleet=f"{FLEET}-hot", cell_id="hot-" + features["cell_id"], usage_cycles=features["usage_cycles"] * 0.75)
    train = pd.concat([features[features["usage_cycles"] <= 80], fast], ignore_index=True)
    later = features[features["usage_cycles"] == 100].reset_index(drop=True)  # reached in training only by the fast fleet
    return AgingReference.fit(train), later


def test_a_fleet_is_judged_against_its_own_aging_not_a_faster_fleets(two_rates):
    ref, later = two_rates
    policy = DriftPolicy(alpha=0.01, min_effect=0.5, min_samples=6)  # config/battery.yaml's drift settings
    assert sorted(ref.fleet_aging) == [FLEET, f"{FLEET}-hot"]
    assert ref.fleet_aging[FLEET].age_range == (0.0, 80.0) and ref.fleet_aging[FLEET].max_extrapolation == 0.25 * 105
    # the chemistry-wide trajectory at 100 cycles is the fast fleet's aging: the slow cells look "too young"
    mixed = evaluate_fleet(replace(ref, fleet_aging={}), later, policy)
    assert mixed.verdict == "drift" and "ic_peak_area_ah" in mixed.drifted_features, mixed.reasons
    # against its own trajectory, extrapolated 20 cycles along its last segment (the margin: 26.25): plain aging
    res = evaluate_fleet(ref, later, policy)
    assert res.verdict == "no drift" and res.rows == 8 and res.cells == 8, res.reasons
    assert res.baseline.startswith(f"fleet {FLEET}'s own aging trajectory") and "0–80 cycles" in res.baseline
    assert all(abs(f.median_z) < 1 and f.cells_departing == 0 for f in res.features)
    # a real change at the same ages still is drift
    changed = evaluate_fleet(ref, later.assign(r_pulse_25c_mohm=later["r_pulse_25c_mohm"] * 1.3), policy)
    assert changed.drifted_features == ["r_pulse_25c_mohm"] and changed.feature("r_pulse_25c_mohm").cells_departing == 8
    # beyond its own ages + the margin: not judged, whatever the fast fleet reached
    beyond = evaluate_fleet(ref, later.assign(usage_cycles=later["usage_cycles"] + 20), policy)
    assert beyond.verdict == "insufficient" and "outside fleet" in beyond.reasons[-1]
    # a fleet that was not trained on: the chemistry's trajectory and every training test
    other = evaluate_fleet(ref, later.assign(fleet="ess-not-trained"), policy)
    assert "was not trained on" in other.baseline and other.to_dict() != res.to_dict()


def test_per_fleet_trajectories_round_trip_and_old_references_still_load(two_rates):
    ref, later = two_rates
    d = json.loads(json.dumps(ref.to_dict(), allow_nan=False))
    assert d["format"] == FORMAT and sorted(d["fleets"]) == sorted(ref.fleet_aging)
    back = AgingReference.from_dict(d)
    assert back.digest == ref.digest and back.to_dict() == ref.to_dict()
    assert evaluate_fleet(back, later).to_dict() == evaluate_fleet(ref, later).to_dict()
    # a reference stored before per-fleet trajectories (format /1): derived from its stored rows, the same ones
    d.pop("fleets")
    d["rows"].pop("own_residuals")
    old = AgingReference.from_dict({**d, "format": "avops-battery-aging-reference/1"})
    assert old.digest == ref.digest
