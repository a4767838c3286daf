"""Feature tables: one definition, two computations (DuckDB offline, NumPy online), proven equal."""

import dataclasses
import math

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pytest

from avops.can.dbc import load_dbc
from avops.can.decode import VectorizedDecoder
from avops.can.logs import read_can_log
from avops.features import definitions as fd
from avops.features.expr import Col, absolute, greatest, least
from avops.features.offline import compute_offline
from avops.features.online import OnlineFeatures
from avops.features.parity import check_parity, golden_windows
from avops.features.signals import Platform, resolve_features
from avops.features.tables import FEATURES_KEY, build_feature_table, load_feature_table, platform_for, verify_parity
from avops.fleet_registry import load_registry
from avops.ingest.ingest import ingest_partition
from avops.can.signal_map import load_signal_map
from avops_assets.defs.features import checks as feature_checks
from avops_assets.defs.features.assets import telemetry
from avops_assets.defs.ingest.assets import raw_drives
from avops_assets.partitions import COHORTS
from resources import AvopsHome, FleetRegistryResource

from tests.conftest import GOLD_COHORT


def test_expressions_give_the_same_rows_in_duckdb_and_numpy():
    rng = np.random.default_rng(1)
    n = 500
    a, b = rng.normal(0, 3, n), rng.normal(0, 3, n)
    a[::17] = np.nan
    b[::23] = 0.0
    exprs = [Col("a") / Col("b"), (Col("a") > 1.0) & (Col("b") < 0.5), greatest(Col("a"), Col("b")) - least(Col("a"), Col("b")),
             absolute(Col("a") * 2.0 - Col("b")), Col("a") + 1.5]
    con = duckdb.connect()
    con.register("t", pa.table({"a": a, "b": b}))
    for e in exprs:
        sql = con.sql(f"SELECT {e.sql()} AS v FROM t").to_arrow_table()["v"].to_numpy(zero_copy_only=False).astype(float)
        np.testing.assert_allclose(sql, np.broadcast_to(e.eval({"a": a, "b": b}), (n,)), rtol=1e-12, equal_nan=True, err_msg=repr(e))


def test_a_definition_change_changes_its_version_and_the_catalogs():
    f = fd.TELEMETRY_FEATURES[0]
    longer = dataclasses.replace(f, window_s=2 * f.window_s)
    assert longer.version != f.version
    assert fd.catalog_version([longer, *fd.TELEMETRY_FEATURES[1:]]) != fd.catalog_version(fd.TELEMETRY_FEATURES)
    assert dataclasses.replace(f).version == f.version, "the version is a function of the definition only"


def test_shift_patterns_come_from_the_dual_clutch_box_and_a_recalibration_shifts_earlier():
    from avops.fleet.vehicle import calibration_for, gear_series

    ramp = np.concatenate([np.linspace(0, 120, 600), np.linspace(120, 0, 600)])
    old, new = (gear_series(ramp, calibration_for(2022).upshift_kph), gear_series(ramp, calibration_for(2024).upshift_kph))
    assert old.min() == 1 and old.max() == 7 and np.all(np.abs(np.diff(old)) <= 1), "one gear at a time, 1st to 7th"
    up, down = old[:600], old[600:][::-1]  # the same speeds, accelerating and slowing down
    assert np.all(down >= up) and np.any(down > up), "slowing down, the box holds each gear longer (hysteresis)"
    assert new[:600].mean() > old[:600].mean(), "the 2024 calibration shifts up at lower speeds"
    vw = Platform.from_signal_map("opendbc:vw_mqb", load_signal_map())
    ford = Platform.from_signal_map("opendbc:ford_lincoln_base_pt", load_signal_map())
    gear = next(f for f in fd.TELEMETRY_FEATURES if f.name == "low_gear_share")
    message, expr = vw.resolve(gear.expr, "low", clock=gear.clock)
    assert message == "Getriebe_11" and "GE_Zielgang" in expr.sql()
    assert "carries no gear" in resolve_features(ford, fd.TELEMETRY_FEATURES)[1]["low_gear_share"], "an EV has no gearbox on the bus"


def test_platforms_resolve_by_quantity_and_name_what_they_lack():
    vw = Platform.from_signal_map("opendbc:vw_mqb", load_signal_map())
    ford = Platform.from_signal_map("opendbc:ford_lincoln_base_pt", load_signal_map())
    _, vw_missing = resolve_features(vw, fd.TELEMETRY_FEATURES)
    _, ford_missing = resolve_features(ford, fd.TELEMETRY_FEATURES)
    assert "brake_pressure_p95" in ford_missing and "brake_pressure_p95" not in vw_missing
    assert "hv_current_a" in vw_missing["hv_current_mean"]
    spread = next(f for f in fd.TELEMETRY_FEATURES if f.name == "wheel_speed_spread_p95")
    message, expr = ford.resolve(spread.expr, "spread")
    assert message == "WheelSpeed" and "WhlFl_W_Meas" in expr.sql()
    with pytest.raises(ValueError, match="several CAN messages"):
        vw.resolve(Col("speed_kph") - Col("brake_pressure_bar"), "bad")
    message, expr = vw.resolve(Col("brake_pressure_bar") / Col("accel_long_mps2"), "joined", clock="brake_pressure_bar")
    assert message == "ESP_05" and expr.names() == {"ESP_Bremsdruck", "ESP_02.ESP_Laengsbeschl"}


def test_as_of_join_across_messages_is_the_same_offline_and_online():
    """A pressure row takes the latest acceleration sample at or before it, if it is fresh enough."""
    vw = Platform.from_signal_map("opendbc:vw_mqb", load_signal_map())
    f = fd.FeatureDef("p_per_a", Col("brake_pressure_bar") / Col("accel_long_mps2"), "mean", window_s=100.0,
                      clock="brake_pressure_bar", asof_tolerance_s=0.5)
    g = fd.FeatureDef("n_joined", Col("accel_long_mps2"), "count", window_s=100.0, clock="brake_pressure_bar", asof_tolerance_s=0.5)
    feats, _ = resolve_features(vw, [f, g])
    p_ts = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    a_ts = np.array([0.9, 2.0, 3.7, 9.0])  # 4.0 joins 3.7; 10.0 finds 9.0 too old; 1.0 joins 0.9
    con = duckdb.connect()
    con.register("can__ESP_05", pa.table({"vehicle_id": ["v"] * 5, "timestamp": p_ts, "ESP_Bremsdruck": [10.0, 20, 30, 40, 50]}))
    con.register("can__ESP_02", pa.table({"vehicle_id": ["v"] * 4, "timestamp": a_ts, "ESP_Laengsbeschl": [1.0, 2.0, 4.0, 5.0]}))
    off = compute_offline(con, feats, pa.table({"vehicle_id": ["v"], "as_of": [10.0]}))
    # rows 1.0 -> 10/1, 2.0 -> 20/2, 3.0 -> 30/2 (2.0 is 1 s old: too old at tol 0.5 -> missing), 4.0 -> 40/4, 10.0 -> missing
    assert off["n_joined"].to_pylist() == [3.0]
    assert off["p_per_a"][0].as_py() == pytest.approx((10 + 10 + 10) / 3)
    on = OnlineFeatures(feats)
    on.update("ESP_02", a_ts[2:], {"ESP_Laengsbeschl": np.array([4.0, 5.0])})  # arrival order differs from time order
    on.update("ESP_05", p_ts, {"ESP_Bremsdruck": np.array([10.0, 20, 30, 40, 50])})
    on.update("ESP_02", a_ts[:2], {"ESP_Laengsbeschl": np.array([1.0, 2.0])})
    got = on.compute(10.0)
    assert got["n_joined"] == 3.0 and got["p_per_a"] == off["p_per_a"][0].as_py()


def _synthetic_con(rows):
    con = duckdb.connect()
    con.register("can__ESP_05", pa.table({"vehicle_id": [r[0] for r in rows], "timestamp": [r[1] for r in rows],
                                          "ESP_Bremsdruck": [r[2] for r in rows]}))
    return con


def test_point_in_time_a_planted_future_value_never_reaches_an_earlier_row():
    vw = Platform.from_signal_map("opendbc:vw_mqb", load_signal_map())
    feats, _ = resolve_features(vw, [f for f in fd.TELEMETRY_FEATURES if f.name.startswith(("brake_pressure", "hard_braking"))])
    past = [("v1", 1000.0 + i, 5.0 + (i % 7)) for i in range(100)]
    planted = ("v1", 1100.5, 250.0)  # after the label time of the first spine row
    spine = pa.table({"vehicle_id": ["v1", "v1"], "as_of": [1099.0, 1101.0]})
    clean = compute_offline(_synthetic_con(past), feats, spine)
    with_future = compute_offline(_synthetic_con(past + [planted]), feats, spine)
    for f in feats:
        a, b = with_future[f.name][0].as_py(), clean[f.name][0].as_py()
        assert a == b or (math.isnan(a) and math.isnan(b)), f"{f.name} as of 1099 saw a value from 1100.5"
    assert with_future["brake_pressure_braking_mean"][1].as_py() > clean["brake_pressure_braking_mean"][1].as_py(), "the later row does see it"
    online = OnlineFeatures(feats)
    online.update("ESP_05", np.array([r[1] for r in past + [planted]]), {"ESP_Bremsdruck": np.array([r[2] for r in past + [planted]])})
    assert online.compute(1099.0)["brake_pressure_p95"] == clean["brake_pressure_p95"][0].as_py()


def test_window_edges_are_the_same_offline_and_online():
    vw = Platform.from_signal_map("opendbc:vw_mqb", load_signal_map())
    f = fd.FeatureDef("p_sum_window", Col("brake_pressure_bar"), "count", window_s=10.0)
    feats, _ = resolve_features(vw, [f])
    rows = [("v1", float(t), 2.0) for t in range(0, 31)]  # a sample exactly on each edge
    spine = pa.table({"vehicle_id": ["v1"] * 3, "as_of": [10.0, 20.0, 30.0]})
    off = compute_offline(_synthetic_con(rows), feats, spine)
    assert off["p_sum_window"].to_pylist() == [10.0, 10.0, 10.0], "(as_of - window, as_of]: the left edge is out, the right in"
    on = OnlineFeatures(feats)
    got = []
    for upto in (20, 30):  # streaming: rows arrive, the latest window is asked for
        new = [r for r in rows if upto - 10 < r[1] <= upto]
        on.update("ESP_05", np.array([r[1] for r in new]), {"ESP_Bremsdruck": np.full(len(new), 2.0)})
        got.append(on.compute(float(upto))["p_sum_window"])
    assert got == [10.0, 10.0]
    with pytest.raises(ValueError, match="forgotten"):
        on.compute(15.0)


def test_parity_on_golden_windows_of_a_simulated_cohort_and_a_mismatch_is_caught(gold):
    home = gold["home"]
    cohort = load_registry(gold["registry_path"]).cohort(GOLD_COHORT)
    ft = build_feature_table(home, cohort)
    assert ft.table.num_rows == 3 * 6 + 3 * 2, "one row per drive (6 planned + 2 campaign per vehicle)"
    report = verify_parity(home, cohort)
    assert report.passed and report.compared >= len(ft.resolved) * 9, report.mismatches[:3]
    assert report.max_rel_diff < 1e-12
    # a one-part-in-a-million change of one offline value is not float rounding
    name = "brake_pressure_p95"
    windows = golden_windows(ft.table)
    idx = [i for i, (v, a) in enumerate(zip(ft.table["vehicle_id"].to_pylist(), ft.table["as_of"].to_pylist())) if (v, a) == windows[0]][0]
    col = ft.table[name].to_numpy().copy()
    col[idx] *= 1 + 1e-6
    tampered = ft.table.set_column(ft.table.column_names.index(name), name, pa.array(col))
    from avops import datasets
    from avops.query import connect_manifest
    from avops.store import ObjectStore
    con = connect_manifest(ObjectStore(home.objects), ft.raw_manifest)
    bad = check_parity(con, ft.resolved, tampered, windows)
    assert not bad.passed and [m["feature"] for m in bad.mismatches] == [name]
    m, table = load_feature_table(home, GOLD_COHORT)
    assert m.digest == ft.manifest.digest and m.body["raw_manifest"] == ft.raw_manifest.digest
    assert datasets.current(ObjectStore(home.objects), home.refs, FEATURES_KEY, GOLD_COHORT).digest == m.digest


def test_online_from_raw_can_frames_equals_offline(tiny_home, tiny_registry):
    """The in-vehicle path: raw frames decoded with the DBC, then the same definitions."""
    cohort = tiny_registry.cohort("xavier-my2022-us")
    ingest_partition(tiny_home, cohort)
    ft = build_feature_table(tiny_home, cohort)
    assert "brake_pressure_p95" in ft.unavailable and "hv_current_mean" not in ft.unavailable
    log = next((tiny_home.landing / cohort.id).rglob("*.asc"))
    frames = read_can_log(log)
    online = OnlineFeatures(ft.resolved, VectorizedDecoder(load_dbc(cohort.dbc_spec)))
    for start in range(0, len(frames), 500):  # as the bus delivers them, in pieces
        online.update_frames(frames.take(np.arange(start, min(start + 500, len(frames)))))
    vehicle = log.parent.name
    rows = [i for i, v in enumerate(ft.table["vehicle_id"].to_pylist()) if v == vehicle]
    as_of = ft.table["as_of"][rows[-1]].as_py()
    got = online.compute(as_of)
    for f in ft.resolved:
        want = ft.table[f.name][rows[-1]].as_py()
        assert (math.isnan(want) and math.isnan(got[f.name])) or math.isclose(want, got[f.name], rel_tol=1e-9), f.name


def test_feature_asset_and_its_blocking_parity_check(tiny_home, tiny_registry_path):
    cohort = "orin-my2024-eu"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [cohort])
    result = dg.materialize([raw_drives, telemetry, feature_checks.online_offline_parity], partition_key=cohort, instance=instance,
                            resources={"avops_home": AvopsHome(root=str(tiny_home.root)), "fleet": FleetRegistryResource(path=str(tiny_registry_path))})
    assert result.success
    [ev] = result.get_asset_check_evaluations()
    assert ev.passed and ev.metadata["values_compared"].value > 0
    md = [e for e in result.get_asset_materialization_events() if e.asset_key == telemetry.key][0].materialization.metadata
    assert md["rows"].value == 2 and "brake_torque_braking_mean" in md["unavailable_on_this_platform"].value
    assert platform_for(load_registry(tiny_registry_path).cohort(cohort)).dbc == "opendbc:vw_mqb"
