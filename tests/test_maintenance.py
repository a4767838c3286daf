"""Predictive maintenance: workshop labels, the model and its gates, drift, the drift sensor and schedule."""

import json
import shutil
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from avops.drift import monitor
from avops.features.tables import build_feature_table, load_feature_table
from avops.fleet.simulator import Season, simulate_fleet
from avops.fleet_registry import load_registry, project_root
from avops.home import HomeLayout
from avops.ingest.ingest import ingest_partition
from avops.maintenance import pipeline
from avops.maintenance.config import ComponentGate, ComponentSpec, load_maintenance_config
from avops.maintenance.model import evaluate_lovo, judge
from avops.maintenance.service import SERVICE_COLUMNS, load_service_orders
from avops.registry import ModelRegistry
from avops.store import ObjectStore
from avops_assets.definitions import defs
from avops_assets.jobs import RETRAIN_JOB
from avops_assets.partitions import COHORTS
from resources import AvopsHome, FleetRegistryResource, ModelRegistryResource
from sensors.drift import drift_sensor, maintenance_retrain_schedule

OLD, NEW = "xavier-my2022-eu", "orin-my2024-eu"
FLEET = {
    "cohorts": [
        {"id": OLD, "platform": "vw-mqb-phev", "model_year": 2022, "soc": "xavier", "region": "eu", "vehicle_count": 3,
         "dbc": "opendbc:vw_mqb", "powertrain_calibration": "PTC-MQB-22.4", "loggers": ["blf", "blf", "asc"],
         "ecus": [{"name": "adas_domain", "hardware_id": "NV-XAVIER-AGX-32", "firmware": "5.2.6"},
                  {"name": "gateway", "hardware_id": "GW-MQB-H2", "firmware": "0412", "soc": "s32g3"}]},
        {"id": NEW, "platform": "vw-mqb-phev", "model_year": 2024, "soc": "orin", "region": "eu", "vehicle_count": 3,
         "dbc": "opendbc:vw_mqb", "powertrain_calibration": "PTC-MQB-24.1", "loggers": ["blf", "blf", "blf"],
         "ecus": [{"name": "adas_domain", "hardware_id": "NV-ORIN-X-64", "firmware": "6.0.8"},
                  {"name": "gateway", "hardware_id": "GW-MQB-H3", "firmware": "0520", "soc": "s32g3"}]},
    ],
    "simulation": {"seed": 11, "start_date": "2026-01-10",
                   "profiles": {"pdm": {"drives_per_vehicle": 6, "drive_seconds": 40, "days_between_drives": 30, "camera_hz": 1,
                                        "lidar_hz": 1, "radar_hz": 1, "can_batch_hz": 10}}},
}


def _lenient_config(root):
    """The project's maintenance config with gates this small fleet can meet: the tests are about the flow."""
    raw = yaml.safe_load((project_root() / "config" / "maintenance.yaml").read_text())
    raw["components"]["brake_pads"]["gates"] = {"mae_upper_bound_mm": {"max": 10.0, "min_samples": 3, "on_insufficient": "warn"},
                                                "skill_vs_mean": {"min": -5.0, "min_samples": 3, "on_insufficient": "warn"}}
    (root / "maintenance.yaml").write_text(yaml.safe_dump(raw))
    return root / "maintenance.yaml"


@pytest.fixture(scope="module")
def _trained(tmp_path_factory):
    """Two CAN-only cohorts simulated, ingested, featurized, and a maintenance model trained for each."""
    root = tmp_path_factory.mktemp("pdm")
    (root / "fleet.yaml").write_text(yaml.safe_dump(FLEET))
    config = load_maintenance_config(_lenient_config(root))
    registry = load_registry(root / "fleet.yaml")
    home = HomeLayout(root / "home")
    simulate_fleet(registry, home, profile="pdm")
    reg = ModelRegistry.local(home)
    results = {}
    for c in registry.cohorts:
        ingest_partition(home, c)
        build_feature_table(home, c)
        results[c.id] = pipeline.train(home, reg, c, config, "test")
    return {"root": root, "home": home, "registry_path": root / "fleet.yaml", "results": results, "config": config}


@pytest.fixture()
def trained(_trained, tmp_path):
    """A private copy (sensors and seasons write into it)."""
    root = tmp_path / "pdm"
    shutil.copytree(_trained["root"], root)
    return {**_trained, "root": root, "home": HomeLayout(root / "home"), "registry_path": root / "fleet.yaml",
            "config": load_maintenance_config(root / "maintenance.yaml")}


def test_workshop_export_is_separate_delayed_and_replacements_change_later_wear(_trained):
    home = _trained["home"]
    orders = load_service_orders(home, OLD).orders
    assert list(pd.read_csv(home.workshop / OLD / "service_orders.csv").columns) == SERVICE_COLUMNS
    assert (orders["recorded_at"] > orders["visit_time"]).all(), "the dealer system syncs days later"
    assert not any(p.suffix == ".csv" for p in home.landing.rglob("*")), "service records never arrive with telemetry"
    for _, o in orders[orders["operation"] == "replaced"].iterrows():
        truth = [json.loads(p.read_text()) for p in (home.sim_truth / OLD / o["vehicle_id"]).glob("*.json")]
        after = [t["wear_before"]["brake_pad_mm"] for t in truth if pd.Timestamp(t["start"]) > o["visit_time"]]
        assert not after or min(after) > 10.0, "every drive after a replacement runs on new pads"


def test_bad_workshop_rows_are_quarantined_with_file_line_and_problem(trained):
    home = trained["home"]
    path = home.workshop / OLD / "service_orders.csv"
    lines = path.read_text().splitlines()
    n = len(lines) - 1
    first = lines[1].split(",")
    lines[1] = ",".join(first[:1] + ["WVWZZZ-UNKNOWN"] + first[2:])
    lines[2] = ",".join(lines[2].split(",")[:-1] + ["n/a"])
    path.write_text("\n".join(lines) + "\n")
    cohort = load_registry(trained["registry_path"]).cohort(OLD)
    rec = load_service_orders(home, OLD, set(cohort.vehicle_ids()))
    assert len(rec.orders) == n - 2
    assert [(r["line"], r["problem"].split(":")[0]) for r in rec.rejected] == [(2, "vehicle_id"), (3, "measured_mm")]
    assert "'n/a'" in rec.rejected[1]["problem"]
    quarantined = list((home.quarantine / "workshop" / OLD).glob("*.rejected.json"))
    assert len(quarantined) == 1 and json.loads(quarantined[0].read_text())["rows"][0]["file"] == str(path)
    path.write_text("vehicle,when\nx,y\n")
    with pytest.raises(ValueError, match="service_orders.csv: columns"):
        load_service_orders(home, OLD)


def _synthetic(signal: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(5):
        for k in range(12):
            pad = rng.uniform(3, 12)
            rows.append({"vehicle_id": f"v{v}", "as_of": 1e9 + k, "x": signal * (12 - pad) + rng.normal(0, 1), "target_mm": pad, "due": float(pad < 5)})
    df = pd.DataFrame(rows)
    return df[["vehicle_id", "as_of", "x"]], df[["target_mm", "due"]]


def test_lovo_gates_pass_a_model_with_signal_and_block_one_without():
    spec = ComponentSpec("pads", ("x",), 45, 4.0, 1.0, ())
    skill = ComponentGate("skill_vs_mean", 0.0, 8, "block")
    X, y = _synthetic(signal=2.0)
    good = evaluate_lovo(X, y, spec, 0.0, 90)
    assert good.n == 60 and good.skill > 0.5 and judge(good, skill)["status"] == "passed"
    assert judge(good, ComponentGate("limit_recall", 0.3, 3, "block"))["status"] == "passed"
    X, y = _synthetic(signal=0.0)
    bad = evaluate_lovo(X, y, spec, 0.0, 90)
    verdict = judge(bad, skill)
    assert bad.skill < 0.05 and verdict["status"] == "failed" and verdict["blocks"]
    few = judge(bad, ComponentGate("skill_vs_mean", 0.0, 100, "warn"))
    assert few["status"] == "insufficient" and not few["blocks"]


def test_training_registers_evidence_reference_and_labels_only_what_was_known(_trained):
    home = _trained["home"]
    r = _trained["results"][OLD]
    assert r.version.stage == "released" and r.labelled > 0
    store_ckpt, components = pipeline.load_checkpoint(__import__("avops.store", fromlist=["ObjectStore"]).ObjectStore(home.objects),
                                                      r.checkpoint_sha256)
    assert store_ckpt["trained_until"] == r.trained_until and "brake_pads" in components
    orders = load_service_orders(home, OLD).orders
    evidence = json.loads((home.objects / "sha256" / r.evidence_sha256[:2] / r.evidence_sha256[2:]).read_bytes())
    assert evidence["labels_known_at"] == r.trained_until
    late = orders[orders["recorded_at"] > pd.Timestamp(r.trained_until, unit="s", tz="UTC")]
    assert len(late) > 0, "some workshop records arrive after the data's cut-off"
    assert pipeline.production(ModelRegistry.local(home), OLD).version == r.version.version


def test_drift_is_flagged_on_a_recalibrated_powertrain_and_not_without_new_data(trained):
    home = trained["home"]
    registry = load_registry(trained["registry_path"])
    reg, config = ModelRegistry.local(home), trained["config"]
    quiet = monitor.evaluate(home, reg, registry.cohort(OLD), config)
    assert not quiet.drifted and all(c.reason.startswith("too few") or c.n_current == 0 for c in quiet.columns)
    simulate_fleet(registry, home, profile="pdm", season=Season("recal", OLD, 2, 10, "PTC-MQB-24.1"))
    ingest_partition(home, registry.cohort(OLD))
    v = monitor.evaluate(home, reg, registry.cohort(OLD), config)
    assert v.retrain and "brake_pressure_per_decel" in v.drifted, v.reasons


def _sensor(trained, instance, cursor=None):
    resources = {"avops_home": AvopsHome(root=str(trained["home"].root)), "fleet": FleetRegistryResource(path=str(trained["registry_path"])),
                 "model_registry": ModelRegistryResource(home=str(trained["home"].root))}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        return drift_sensor(ctx)


def test_drift_sensor_requests_one_retrain_for_the_drifted_cohort_with_cooldown(trained, monkeypatch):
    home = trained["home"]
    monkeypatch.setenv("AVOPS_HOME", str(home.root))
    monkeypatch.setenv("AVOPS_MAINTENANCE_CONFIG", str(trained["root"] / "maintenance.yaml"))
    registry = load_registry(trained["registry_path"])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [OLD, NEW])
    first = _sensor(trained, instance)
    assert not first.run_requests, "nothing new since training"
    simulate_fleet(registry, home, profile="pdm", season=Season("recal", OLD, 2, 10, "PTC-MQB-24.1"))
    ingest_partition(home, registry.cohort(OLD))
    ingest_partition(home, registry.cohort(NEW))  # re-ingested with nothing new: looked at, no drift
    second = _sensor(trained, instance, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [OLD]
    req = second.run_requests[0]
    assert req.tags["avops/trigger"] == "drift" and "brake_pressure_per_decel" in req.tags["avops/reason"]
    # more new drives within the cooldown: no second request
    simulate_fleet(registry, home, profile="pdm", season=Season("recal-2", OLD, 1, 70, "PTC-MQB-24.1"))
    ingest_partition(home, registry.cohort(OLD))
    third = _sensor(trained, instance, second.cursor)
    assert not third.run_requests and "cooling down" in third.skip_reason.skip_message
    # the requested run retrains through the gates and says why it ran
    job = defs().resolve_job_def(RETRAIN_JOB)
    result = job.execute_in_process(partition_key=OLD, instance=instance, tags=req.tags, resources={
        "avops_home": AvopsHome(root=str(home.root)), "fleet": FleetRegistryResource(path=str(trained["registry_path"])),
        "model_registry": ModelRegistryResource(url="")}, raise_on_error=False)
    mats = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert mats["maintenance/models"]["trigger"].value == "drift"
    assert mats["maintenance/models"]["version"].value > trained["results"][OLD].version.version
    assert any(e.check_name == "maintenance_gates" for e in result.get_asset_check_evaluations())


def test_schedule_requests_every_cohort_but_not_one_already_retraining():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COHORTS, [OLD, NEW])
        job = defs().resolve_job_def(RETRAIN_JOB)
        instance.create_run_for_job(job, tags={"dagster/partition": NEW}, status=dg.DagsterRunStatus.STARTED)
        when = datetime(2026, 11, 30, 3, tzinfo=timezone.utc)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
            requests = list(maintenance_retrain_schedule(ctx))
    assert [r.partition_key for r in requests] == [OLD] and requests[0].tags["avops/trigger"] == "schedule"
    assert requests[0].run_key == f"schedule:{OLD}:20261130T0300", "one request per cohort per tick"


def test_field_accuracy_on_measurements_recorded_after_training_requests_a_retrain(trained, monkeypatch):
    """No drift, but the workshop now measures pads far from what the model estimates: retrain, and say why."""
    home = trained["home"]
    monkeypatch.setenv("AVOPS_MAINTENANCE_CONFIG", str(trained["root"] / "maintenance.yaml"))
    registry = load_registry(trained["registry_path"])
    reg = ModelRegistry.local(home)
    prod = pipeline.production(reg, NEW)
    trained_until = pd.Timestamp(trained["results"][NEW].trained_until, unit="s", tz="UTC")
    path = home.workshop / NEW / "service_orders.csv"
    orders = pd.read_csv(path, dtype=str)
    late = []
    for i, vehicle in enumerate(registry.cohort(NEW).vehicle_ids()):  # a measurement near each vehicle's last drive, filed late
        visit = trained_until - pd.Timedelta(days=2)
        late.append({"order_id": f"LATE-{i}", "vehicle_id": vehicle, "workshop_id": "WS-900", "visit_time": visit.isoformat(),
                     "recorded_at": (trained_until + pd.Timedelta(days=20)).isoformat(), "odometer_km": "90000",
                     "operation": "inspection", "component": "brake_pads", "measured_mm": "0.5"})
    pd.concat([orders, pd.DataFrame(late)]).to_csv(path, index=False)
    v = monitor.evaluate(home, reg, registry.cohort(NEW), trained["config"])
    assert v.model_version == prod.version and not v.drifted
    assert v.accuracy is not None and v.accuracy.measurements >= 3 and v.accuracy.degraded and v.retrain
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [NEW])
    result = _sensor(trained, instance)
    [req] = result.run_requests
    assert req.partition_key == NEW and req.tags["avops/trigger"] == "field_accuracy" and "field accuracy" in req.tags["avops/reason"]


def test_the_production_model_ships_to_the_gateway_and_rolls_back_alone(trained):
    """Engines (parity, budget) -> compatibility -> signed package -> the gateway ECU installs it; a second
    model version ships as its own release, and rolling maintenance back touches nothing else."""
    import dataclasses

    from avops.compile import pipeline as cp
    from avops.compile.socs import load_catalog
    from avops.fleet.ecus import SimulatedVehicle
    from avops.maintenance import engines
    from avops.maintenance.export import export_onnx
    from avops.ota import packages
    from avops.ota.rollback import rollback
    from avops.ota.uptane import metadata_state
    from avops.rollout.reports import verify_report
    from avops.rollout.vehicle_keys import registered_keys

    home, config, socs = trained["home"], trained["config"], load_catalog()
    fleet = load_registry(trained["registry_path"])
    cohort = fleet.cohort(NEW)
    reg = ModelRegistry.local(home)
    m, [rec] = engines.build_engines(home, reg, cohort, config, socs, measure_runs=20)
    par = rec["parity"]["components"]["brake_pads"]
    assert (rec["soc"], rec["ecus"][0]["name"], rec["status"]) == ("s32g3", "gateway", "ok"), rec["parity"]
    assert par["rows"] >= 10 and par["max_abs_diff_mm"] <= config.parity_max_mm and par["decision_flips"] == 0
    assert rec["source_checkpoint_sha256"] == pipeline.production(reg, NEW).artifact_sha256
    assert rec["budget"]["passed"] and rec["budget"]["latency_budget_ms"] == socs["s32g3"].latency_budget_ms

    # parity can fail: an engine with shifted weights is caught
    _, comps = pipeline.load_checkpoint(ObjectStore(home.objects), rec["source_checkpoint_sha256"])
    X = load_feature_table(home, NEW)[1].to_pandas()
    X.loc[X.index[0], comps["brake_pads"].features[0]] = np.nan  # a feature the bus did not deliver: imputed in both
    assert engines.parity(comps, export_onnx(comps, {}), X, config.parity_max_mm)["passed"]
    bad = {"brake_pads": dataclasses.replace(comps["brake_pads"], intercept=comps["brake_pads"].intercept + 0.05)}
    assert not engines.parity(comps, export_onnx(bad, {}), X, config.parity_max_mm)["passed"]

    # the matrix: allowed on this cohort's gateway, refused on vehicles without one
    all_engines = cp.all_engines(home, fleet.cohort_ids)
    matrix = cp.compatibility_rows(all_engines, cohort, socs)
    row = matrix[matrix["engine_sha256"] == rec["engine_sha256"]].iloc[0]
    assert row["compatible"] and row["ecu"] == "gateway" and row["ecu_hardware_id"] == "GW-MQB-H3"
    old_matrix = cp.compatibility_rows(all_engines, fleet.cohort(OLD), socs)
    assert old_matrix.loc[old_matrix["engine_sha256"] == rec["engine_sha256"], "compatible"].item(), "it would run on OLD's gateway"
    assert packages.select_engines(old_matrix, all_engines, OLD) == [], "but it is another fleet's model: never shipped there"
    no_gateway = dataclasses.replace(cohort, id="no-gateway", ecus=tuple(e for e in cohort.ecus if e.name != "gateway"))
    assert "no gateway ECU" in cp.compatibility(rec, no_gateway, socs)[1]

    pkg = packages.build_and_publish(home, cohort, matrix, all_engines, "run-1")
    [release] = pkg.releases
    assert release.ecu_identifier == "gateway" and release.hardware_id == "GW-MQB-H3" and release.path.startswith("maintenance/s32g3/")
    vehicle = cohort.vehicle_ids()[0]
    gateway = SimulatedVehicle(home, NEW, vehicle, "GW-MQB-H3", ecu="gateway")
    report, why = verify_report(gateway.cycle(release.rollout_id, "maintenance", datetime.now(timezone.utc)), registered_keys(home))
    assert report is not None and report.booted and report.installed_sha256 == rec["engine_sha256"], why
    adas = SimulatedVehicle(home, NEW, vehicle, "NV-ORIN-X-64")
    assert adas.primary.update(adas.sources(), datetime.now(timezone.utc)).installed == [], "the ADAS ECU is not assigned the gateway's model"

    # publishing again with nothing changed keeps the release (no new counter, no new rollout)
    again = packages.build_and_publish(home, cohort, matrix, all_engines, "run-2")
    assert again.releases == pkg.releases

    # a second model version (other shrinkage) ships as release 2; rolling maintenance back re-signs only the director
    strict = dataclasses.replace(config, components=tuple(dataclasses.replace(c, ridge_alpha=200.0) for c in config.components))
    v2 = pipeline.train(home, reg, cohort, strict, "test")
    assert pipeline.production(reg, NEW).version == v2.version.version
    _, [rec2] = engines.build_engines(home, reg, cohort, config, socs, measure_runs=20)
    assert rec2["engine_sha256"] != rec["engine_sha256"]
    all_engines = cp.all_engines(home, fleet.cohort_ids)
    mm, rows = cp.publish_compatibility(home, cohort, fleet.cohort_ids, socs)
    pkg2 = packages.build_and_publish(home, cohort, rows, all_engines, "run-3")
    packages.publish_manifest(home, pkg2, mm.digest)
    [r2] = pkg2.releases
    assert r2.release_counter == release.release_counter + 1 and r2.rollout_id != release.rollout_id
    before = metadata_state(home)
    rb = rollback(home, NEW, "maintenance", "test: field complaints")
    after = metadata_state(home)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k.startswith(f"director/{NEW}/") for k in changed), changed
    assert rb.to_sha256 == rec["engine_sha256"] and rb.release_counter == r2.release_counter + 1
    report, _ = verify_report(gateway.cycle(rb.rollout_id, "maintenance", datetime.now(timezone.utc)), registered_keys(home))
    assert report.booted and report.installed_sha256 == rec["engine_sha256"]

    # the package's lineage runs from the gateway engine down to the landed drive files and the workshop export, verified
    from avops.lineage import package_lineage

    lin = package_lineage(home, NEW, reg, None)
    kinds = {n.kind for n in lin.nodes.values()}
    assert {"engine", "attestation", "checkpoint", "gate result", "feature table", "raw drives", "landed file",
            "workshop export", "drift reference"} <= kinds, kinds
    assert lin.problems == []
