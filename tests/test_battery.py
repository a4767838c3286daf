"""Battery intelligence end to end: PyBaMM cells, BMS logs, features, SoH/RUL models, BMS engines, Dagster wiring."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from avops.battery import pipeline as bp
from avops.battery.aging import CellSpec, cell_specs, simulate_cell
from avops.battery.config import load_battery_config
from avops.battery.ingest import ingest_fleet, load_reference_tests
from avops.fleet.battery import simulate_batteries
from avops.fleet_registry import load_registry
from avops.home import HomeLayout
from avops.registry import ModelRegistry

EU_NMC = ["xavier-my2022-eu", "orin-my2024-eu", "rcarv4h-my2025-eu"]


@pytest.fixture(scope="session")
def battery_world(tmp_path_factory):
    """Every fleet of config/battery.yaml (demo profile: 18 cells), ingested, featurised, with models per chemistry."""
    root = tmp_path_factory.mktemp("battery")
    home = HomeLayout(root / "home")
    config, fleet = load_battery_config(), load_registry()
    simulate_batteries(config, fleet, home, workers=2)
    shutil.copytree(home.root, root / "pristine")  # the delivered logs before any ingest (for the Dagster test)
    for f in config.fleets:
        ingest_fleet(home, config, f)
    for chem in config.chemistries:
        bp.fit_chemistry_embedding(home, config, chem)
    for f in config.fleets:
        bp.build_feature_table(home, config, f)
    reg = ModelRegistry(f"sqlite:///{home.root / 'models.db'}", audit_keys=home.root / "audit" / "keys")
    results = {chem: bp.train_chemistry(home, reg, config, chem, "test") for chem in config.chemistries}
    return {"root": root, "home": home, "config": config, "fleet": fleet, "reg": reg, "results": results}


def _table(world, fleet: str) -> pd.DataFrame:
    _, x, y = bp.load_feature_table(world["home"], fleet)
    return x.merge(y[["test_id", "soh", "rul_cycles", "capacity_ah"]], on="test_id").sort_values(["cell_id", "usage_cycles"])


def test_cells_fade_monotonically_and_the_main_ic_peak_shrinks_and_shifts(battery_world):
    for fleet in battery_world["config"].fleets:
        d = _table(battery_world, fleet)
        for cell, g in d.groupby("cell_id"):
            soh = g["soh"].to_numpy()
            assert np.all(np.diff(soh) < 0.002), f"{cell}: measured capacity must fade (up to noise): {soh.round(4)}"
            assert soh[-1] < soh[0] - 0.08, f"{cell} barely aged: {soh[0]:.3f} -> {soh[-1]:.3f}"
            # NMC: the main dQ/dV peak shrinks; LFP: the main (graphite) peak keeps its height while the second
            # one collapses (lithium inventory loss), so the peaks together must shrink for both
            h = (g["ic_peak_height"] + g["ic_peak2_height"]).to_numpy()
            assert h[-1] < 0.85 * h[0], f"{cell}: the dQ/dV peaks must shrink with aging ({h[0]:.2f} -> {h[-1]:.2f})"
            if battery_world["config"].fleet(fleet).chemistry == "nmc":
                main = g["ic_peak_height"].to_numpy()
                assert main[-1] < 0.8 * main[0], f"{cell}: main peak {main[0]:.2f} -> {main[-1]:.2f}"
        # the peak moves: the mean position over the fleet's last tests differs from its first by more than a grid step
        first = d.groupby("cell_id")["ic_peak_v"].first().mean()
        last = d.groupby("cell_id")["ic_peak_v"].last().mean()
        chem = battery_world["config"].chemistry_of(fleet)
        step = (chem.window_v[1] - chem.window_v[0]) / 63
        assert abs(last - first) > step, f"{fleet}: IC peak did not shift ({first:.4f} -> {last:.4f} V)"


def test_hotter_cohorts_age_faster(battery_world):
    def fade_per_100(fleet: str) -> float:
        d = _table(battery_world, fleet)
        per_cell = d.groupby("cell_id").apply(lambda g: (g["soh"].iloc[0] - g["soh"].iloc[-1]) / g["usage_cycles"].iloc[-1] * 100,
                                              include_groups=False)
        return float(per_cell.mean())

    hot = fade_per_100("ess-nmc-tx")  # 30 °C storage
    eu = np.mean([fade_per_100(f) for f in EU_NMC])  # ~16 °C vehicles
    assert hot > 1.15 * eu, (hot, eu)


def test_temperature_alone_speeds_aging_arrhenius():
    """The same cell at 20 °C and 35 °C (nothing else differs): the hotter one loses more capacity."""
    config = load_battery_config()
    base = cell_specs(config, config.fleet("ess-nmc-tx"), ["u"], 1, 15, 3, seed=1)[0]
    caps = {}
    for t in (20.0, 35.0):
        tests = simulate_cell(dataclasses.replace(base, temperature_c=t))
        caps[t] = tests[-1].capacity_ah / tests[0].capacity_ah
    assert caps[35.0] < caps[20.0] - 0.01, caps


def test_pybamm_runs_are_cached_by_content(tmp_path):
    from avops.battery.aging import cached_cell

    config = load_battery_config()
    spec: CellSpec = cell_specs(config, config.fleet("ess-lfp-de"), ["u"], 1, 5, 2, seed=3)[0]
    first, hit1 = cached_cell(spec, tmp_path)
    again, hit2 = cached_cell(spec, tmp_path)
    assert (hit1, hit2) == (False, True)
    assert np.array_equal(first[-1].voltage_v, again[-1].voltage_v)
    other, hit3 = cached_cell(dataclasses.replace(spec, temperature_c=spec.temperature_c + 1), tmp_path)
    assert not hit3  # any physics input changes the key
    (entry,) = [p for p in tmp_path.rglob("*.npz") if spec.key() in p.name]
    entry.write_bytes(b"damaged")
    again2, hit4 = cached_cell(spec, tmp_path)
    assert not hit4 and np.array_equal(again2[-1].voltage_v, first[-1].voltage_v)  # a damaged entry is recomputed


def test_bad_bms_logs_are_quarantined_and_nothing_else_is_lost(battery_world, tmp_path):
    import pyarrow.parquet as pq

    home = HomeLayout(tmp_path / "home")
    fleet = "ess-lfp-de"
    shutil.copytree(battery_world["root"] / "pristine" / "bms" / fleet, home.bms / fleet)
    files = sorted((home.bms / fleet).rglob("*.parquet"))
    n = len(files)
    files[0].write_bytes(files[0].read_bytes()[: len(files[0].read_bytes()) // 2])  # truncated upload
    files[1].write_bytes(b"")  # empty
    t = pq.read_table(files[2])  # the log claims another fleet
    meta = {k: v for k, v in t.schema.metadata.items()}
    meta[b"avops.bms.fleet"] = b"ess-nmc-tx"
    pq.write_table(t.replace_schema_metadata(meta), files[2])
    t = pq.read_table(files[3]).to_pandas()  # a sensor fault: NaN voltages
    t.loc[5:9, "voltage_v"] = np.nan
    import pyarrow as pa

    pq.write_table(pa.Table.from_pandas(t, preserve_index=False).replace_schema_metadata(pq.read_table(files[3]).schema.metadata), files[3])
    r = ingest_fleet(home, battery_world["config"], fleet)
    assert r.tests == n - 4
    reasons = sorted(q.reason for q in r.quarantined)
    assert reasons == sorted(["corrupt", "empty", "cohort_mismatch", "schema_validation"]), reasons
    assert any("voltage_v has 5 non-finite" in q.detail for q in r.quarantined)
    moved = sorted((home.quarantine / "bms" / fleet).rglob("*.parquet"))
    assert len(moved) == 4 and all(p.with_name(p.name + ".reason.json").exists() for p in moved)
    assert len(list((home.bms / fleet).rglob("*.parquet"))) == n - 4  # nothing else moved, nothing deleted


def test_soh_error_on_held_out_cells_is_within_the_gate(battery_world):
    nmc = battery_world["results"]["nmc"]
    assert nmc.version.stage == "released" and not nmc.blocked
    mild = next(g for g in nmc.gates if g["gate"] == "nmc.mild.soh_mae_upper_bound")
    assert mild["status"] == "passed" and mild["samples"] >= 3
    assert mild["value"] <= 0.02  # the gate: 95 % upper bound of the mean held-out-cell SoH error
    assert mild["mean_cell_mae"] < 0.01  # measured: ~0.004 (0.4 % SoH) on cells the model never saw
    per_cell = nmc.per_cell[nmc.per_cell["target"] == "soh"]
    assert len(per_cell) == battery_world["results"]["nmc"].cells and per_cell["mae"].max() < 0.02
    # a held-out cell's rows are predicted by a model that never saw that cell (not just unseen cycles)
    store_ev = battery_world["home"]
    from avops import datasets
    from avops.store import open_store

    preds = datasets.read_table(open_store(store_ev), nmc.evaluation, "predictions").to_pandas()
    assert set(preds["cell_id"]) == set(per_cell["cell_id"])


def test_generalization_comparison_is_computed_and_stored(battery_world):
    from avops.store import open_store

    for chem, r in battery_world["results"].items():
        gen = r.generalization
        assert set(gen["trained_on"]) == {"vehicle_only", "both"}
        assert set(gen["evaluated_on"]) == {"held-out vehicle cells", "held-out stationary cells"}
        soh = gen[gen["target"] == "soh"].set_index(["trained_on", "evaluated_on"])["mae"]
        assert soh.notna().all() and (soh > 0).all(), soh
        evidence = open_store(battery_world["home"]).get_json(r.evidence_sha256)
        assert evidence["method"] == "leave-one-cell-out" and len(evidence["generalization"]) == len(gen)
        assert battery_world["reg"].get(bp.MODEL, r.version.version).metrics  # also in the registry's metrics
    # the claim, measured: storage cells are predicted better by a model that also saw storage cells
    nmc = battery_world["results"]["nmc"].generalization
    s = nmc[nmc["target"] == "soh"].set_index(["trained_on", "evaluated_on"])["mae"]
    assert s[("both", "held-out stationary cells")] < s[("vehicle_only", "held-out stationary cells")]


def test_online_offline_parity_and_point_in_time(battery_world):
    for fleet in ("orin-my2025-cn", "ess-nmc-tx"):
        r = bp.verify_parity(battery_world["home"], battery_world["config"], fleet)
        assert r.passed and r.compared > 100, r.mismatches[:3]
    # point in time: dropping a cell's later tests changes none of its earlier rows
    from avops.battery.features import FEATURE_NAMES, offline_features

    home, config = battery_world["home"], battery_world["config"]
    _, tests, samples = load_reference_tests(home, "ess-nmc-tx")
    _, spec = bp.feature_spec(home, config, "nmc")
    full = offline_features(tests, samples, spec).to_pandas().set_index("test_id")
    import pyarrow.compute as pc

    cut = tests.filter(pc.less(tests.column("usage_cycles"), 100))
    early = offline_features(cut, samples, spec).to_pandas().set_index("test_id")
    assert len(early) < len(full)
    pd.testing.assert_frame_equal(early[list(FEATURE_NAMES)], full.loc[early.index, list(FEATURE_NAMES)])


def test_a_planted_change_breaks_parity(battery_world, tmp_path):
    """The parity check can fail: a table computed with another smoothing width than the definition's is caught."""
    from avops import datasets
    from avops.battery.features import offline_features
    from avops.store import open_store

    shutil.copytree(battery_world["home"].root, tmp_path / "home")
    home = HomeLayout(tmp_path / "home")
    store = open_store(home)
    m, tests, samples = load_reference_tests(home, "ess-lfp-de")
    fm, _, y = bp.load_feature_table(home, "ess-lfp-de")
    _, spec = bp.feature_spec(home, battery_world["config"], "lfp")
    wrong = offline_features(tests, samples, dataclasses.replace(spec, smooth_points=7))
    import pyarrow as pa

    datasets.publish(store, home.refs, bp.FEATURES_KEY, "ess-lfp-de", {"features": wrong, "labels": pa.Table.from_pandas(y, preserve_index=False)},
                     {k: v for k, v in fm.body.items() if k not in ("asset", "partition", "tables")})
    r = bp.verify_parity(home, battery_world["config"], "ess-lfp-de")
    assert not r.passed and r.mismatches


def test_bms_engine_is_int8_within_parity_and_the_mcu_budget(battery_world, tmp_path):
    from avops.battery import engines as be
    from avops.compile.socs import load_catalog

    world = battery_world
    cohort = world["fleet"].cohort("xavier-my2022-eu")
    m, recs = be.build_engines(world["home"], world["reg"], cohort, world["config"], load_catalog(), measure_runs=20)
    (rec,) = recs
    assert rec["precision"] == "int8" and rec["soc"] == "aurix-tc4" and rec["ecus"][0]["name"] == "bms"
    assert rec["status"] == "ok", rec
    assert rec["parity"]["targets"]["soh"]["max_abs_diff"] <= 0.01 and rec["parity"]["targets"]["soh"]["max_abs_diff"] > 0
    assert rec["budget"]["memory_mb"] <= 0.0625
    import onnx

    from avops.store import open_store

    ops = {n.op_type for n in onnx.load_from_string(open_store(world["home"]).get_bytes(rec["engine_sha256"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized, not an fp32 graph labelled int8
    # the compatibility matrix judges it against the cohort's BMS, and another cohort of the other chemistry cannot take it
    from avops.compile.pipeline import compatibility

    ok, why = compatibility(rec, cohort, load_catalog())
    assert ok, why
    # parity can fail: an engine of a tampered model (weights scaled) against the registered checkpoint
    from avops.battery.model import LinearModel

    body, models = bp.load_checkpoint(open_store(world["home"]), world["results"]["nmc"].checkpoint_sha256)
    bad = {t: dataclasses.replace(mm, coef=[c * 1.5 for c in mm.coef]) for t, mm in models.items()}
    X, _, _ = bp.training_rows(world["home"], world["config"], "nmc", open_store(world["home"]))
    engine = be.export_onnx(bad, {})
    assert not be.parity(models, engine, X, 0.01, 10)["passed"]
    assert isinstance(models["soh"], LinearModel)


def test_no_production_model_means_nothing_to_ship(battery_world, tmp_path):
    from avops.battery import engines as be
    from avops.compile.socs import load_catalog

    empty = ModelRegistry(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(be.NothingToShip, match="no production battery_soh model for chemistry lfp"):
        be.build_engines(battery_world["home"], empty, battery_world["fleet"].cohort("orin-my2025-cn"), battery_world["config"], load_catalog())


def test_battery_jobs_in_dagster(battery_world, tmp_path, monkeypatch):
    """The battery graph through Dagster: fleet and chemistry jobs, blocking checks, metadata with the plots."""
    import dagster as dg

    from avops_assets.definitions import defs
    from avops_assets.defs.battery.assets import CELLS, EMBEDDING, GOLDEN, REFERENCE_TESTS, SOH_MODELS
    from avops_assets.jobs import BATTERY_CHEMISTRY_JOB, BATTERY_FLEET_JOB
    from avops_assets.partitions import BATTERY_FLEETS
    shutil.copytree(battery_world["root"] / "pristine", tmp_path / "home")
    home = HomeLayout(tmp_path / "home")
    monkeypatch.setenv("AVOPS_HOME", str(home.root))  # the code location's resources read it (embedded defaults)
    monkeypatch.delenv("AVOPS_REGISTRY_URL", raising=False)
    fleets = ["ess-lfp-de", "orin-my2025-cn"]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATTERY_FLEETS, fleets)
    d = defs()
    fleet_job, chem_job = d.resolve_job_def(BATTERY_FLEET_JOB), d.resolve_job_def(BATTERY_CHEMISTRY_JOB)

    def run(job, key, assets):
        r = job.execute_in_process(partition_key=key, instance=instance, asset_selection=assets, raise_on_error=False)
        assert r.success, [e.message for e in r.all_events if e.is_failure]
        return r

    for f in fleets:
        run(fleet_job, f, [REFERENCE_TESTS])
    run(chem_job, "lfp", [EMBEDDING])
    checks = []
    for f in fleets:
        r = run(fleet_job, f, [CELLS])
        checks += [(c.check_name, c.passed) for c in r.get_asset_check_evaluations()]
    r = run(chem_job, "lfp", [GOLDEN, SOH_MODELS])
    checks += [(c.check_name, c.passed) for c in r.get_asset_check_evaluations()]
    assert ("battery_online_offline_parity", True) in checks and ("float32_reference_matches_golden", True) in checks
    assert any(name == "battery_gates" for name, _ in checks)
    mats = {e.asset_key.to_user_string(): e.materialization.metadata for e in r.get_asset_materialization_events()}
    assert "vehicle only" in mats["battery/soh_models"]["generalization"].value
    assert json.loads(json.dumps(mats["battery/soh_models"]["generalization_table"].value))


def test_sensors_ingest_new_logs_and_retrain_only_on_aging_that_is_not_aging(battery_world, tmp_path, monkeypatch):
    """bms_landing_sensor: new logs -> one run per fleet. battery_drift_sensor: a model trained on the first
    months; later tests that age as expected request nothing, later tests whose resistance rose 30 % do."""
    import dagster as dg
    import pyarrow as pa

    from avops import datasets
    from avops.store import open_store
    from avops_assets.definitions import resources
    from avops_assets.defs.battery.assets import SOH_MODELS
    from avops_assets.partitions import BATTERY_FLEETS
    from sensors.battery import battery_drift_sensor, bms_landing_sensor

    shutil.copytree(battery_world["home"].root, tmp_path / "home")
    home = HomeLayout(tmp_path / "home")
    monkeypatch.setenv("AVOPS_HOME", str(home.root))
    monkeypatch.delenv("AVOPS_REGISTRY_URL", raising=False)
    config, store = battery_world["config"], open_store(home)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATTERY_FLEETS, list(config.fleets))
    res = resources()

    def tick(sensor, cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res) as ctx:
            return sensor(ctx)

    first = tick(bms_landing_sensor, None)
    assert sorted(r.partition_key for r in first.run_requests) == sorted(config.fleets)
    assert tick(bms_landing_sensor, first.cursor).run_requests == []  # nothing new: nothing requested

    # the production nmc model is trained on the tests up to a cut-off (the first months)
    nmc = config.fleets_of("nmc")
    full = {f: bp.load_feature_table(home, f, store) for f in nmc}
    cut = pd.Timestamp("2026-07-16", tz="UTC")  # as the demo: vehicle cells at ~150 cycles, storage at ~185
    for f, (m, x, y) in full.items():
        keep = pd.to_datetime(x["started_at"], utc=True) <= cut
        datasets.publish(store, home.refs, bp.FEATURES_KEY, f,
                         {"features": pa.Table.from_pandas(x[keep], preserve_index=False),
                          "labels": pa.Table.from_pandas(y[y["test_id"].isin(x.loc[keep, "test_id"])], preserve_index=False)},
                         {k: v for k, v in m.body.items() if k not in ("asset", "partition", "tables")})
    reg = ModelRegistry.local(home)
    # few cells reach end of life by the cut-off: the RUL gates would (rightly) block; this test is about drift
    ungated = dataclasses.replace(config, model=dataclasses.replace(config.model, gates=()))
    r = bp.train_chemistry(home, reg, ungated, "nmc", "test")
    assert r.version.stage == "released"
    drift0 = tick(battery_drift_sensor, None)
    assert drift0.run_requests == []  # nothing after training yet

    def publish_later(f: str, scale: float) -> None:
        m, x, y = full[f]
        x = x.copy()
        later = pd.to_datetime(x["started_at"], utc=True) > cut
        x.loc[later, "r_pulse_25c_mohm"] *= scale
        datasets.publish(store, home.refs, bp.FEATURES_KEY, f, {"features": pa.Table.from_pandas(x, preserve_index=False),
                                                                 "labels": pa.Table.from_pandas(y, preserve_index=False)},
                         {k: v for k, v in m.body.items() if k not in ("asset", "partition", "tables")})

    publish_later("xavier-my2022-eu", 1.0)  # the later tests as they aged
    aged = tick(battery_drift_sensor, drift0.cursor)
    assert aged.run_requests == [], aged.skip_reason
    _, verdict = bp.fleet_drift(home, reg, config, "xavier-my2022-eu")
    assert verdict.verdict != "drift" and verdict.rows > 0
    assert any(f.naive_statistic > f.statistic for f in verdict.features)  # raw values moved further than the residuals
    publish_later("rcarv4h-my2025-eu", 1.3)  # a real change: resistance up 30 % at the same ages
    changed = tick(battery_drift_sensor, aged.cursor)
    (req,) = changed.run_requests
    assert req.partition_key == "nmc" and req.tags["avops/trigger"] == "drift" and "r_pulse_25c_mohm" in req.tags["avops/reason"]
    assert list(req.asset_selection) == [SOH_MODELS]
    assert tick(battery_drift_sensor, changed.cursor).run_requests == []  # seen, and cooling down


def test_vehicle_packs_on_the_can_bus_age_with_their_cells(battery_world, tmp_path, tiny_registry_path):
    """The drive simulator takes each vehicle's pack capacity and resistance from its simulated cell, so the
    pack voltage and current that ingest decodes from the CAN logs age with what the BMS logs show."""
    from datetime import datetime

    from avops.fleet.battery import pack_aging
    from avops.fleet.simulator import simulate_fleet

    registry = load_registry(tiny_registry_path)
    cohort = "orin-my2024-eu"
    with_cells = HomeLayout(tmp_path / "with")
    shutil.copytree(battery_world["home"].sim_truth / "battery", with_cells.sim_truth / "battery")
    without = HomeLayout(tmp_path / "without")
    for home in (with_cells, without):
        simulate_fleet(registry, home, profile="tiny", cohorts=[cohort])
    packs = pack_aging(with_cells, cohort)
    drives: dict[str, list] = {}
    for path in sorted((with_cells.sim_truth / cohort).rglob("*.json")):
        truth = json.loads(path.read_text())
        plain = json.loads((without.sim_truth / path.relative_to(with_cells.sim_truth)).read_text())
        drives.setdefault(truth["vehicle_id"], []).append((truth["start"], truth["wear_before"], plain["wear_before"]))
    assert len(drives) == 2
    for vehicle, rows in drives.items():
        rows.sort(key=lambda r: r[0])
        initial_r = rows[0][2]["battery_resistance_mohm"]  # the generic model's pack at the first drive
        for start, wear, _ in rows:
            fade, r_rel = packs[vehicle].at(datetime.fromisoformat(start))
            assert wear["battery_capacity_fade"] == pytest.approx(fade)
            assert wear["battery_resistance_mohm"] == pytest.approx(initial_r * r_rel)
        assert rows[0][1]["battery_capacity_fade"] > 0.01  # weeks after the cell's first test, it has faded
    # and the bytes on the bus differ: the same drives, another pack
    a = sorted((with_cells.landing / cohort).rglob("*.*"))
    b = sorted((without.landing / cohort).rglob("*.*"))
    assert [p.name for p in a] == [p.name for p in b] and any(x.read_bytes() != y.read_bytes() for x, y in zip(a, b))
