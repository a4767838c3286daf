"""Staged canary rollout on simulated vehicles: waves advance on signed post-boot reports, faults roll back."""

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from avops.compile import pipeline as cp
from avops.compile.socs import load_catalog
from avops.fleet.ecus import SimulatedVehicle
from avops.rollout.vehicle_keys import registered_keys
from avops.ota import packages
from avops.ota.uptane import Uptane
from avops.rollout import controller
from avops.rollout.policy import load_rollout_policy
from avops.rollout.store import RolloutStore

VEHICLES = [f"v{i:03d}" for i in range(10)]


@pytest.fixture()
def fleet(built, request):
    """A cohort of 10 simulated x86 vehicles that all run package 1; package 2 is published but staged."""
    home = built["home"]
    cohort = dataclasses.replace(built["cohort"], id=f"x86-rollout-{request.node.name[-12:]}", soc="x86-ecu")
    hw = next(e.hardware_id for e in cohort.ecus if e.name == "adas_domain")
    records = [dict(r, cohort=cohort.id) for r in built["records"]]  # as if built for this cohort (packages ship only their own)
    matrix = cp.compatibility_rows(records, cohort, load_catalog())
    first = packages.build_and_publish(home, cohort, matrix, records, "run-1")
    vehicles = {v: SimulatedVehicle(home, cohort.id, v, hw) for v in VEHICLES}
    now = datetime.now(timezone.utc)
    for sim in vehicles.values():  # everyone on package 1
        sim.cycle(first.rollout_id, "perception", now)
    fp32 = [dict(r, status="blocked") if r["precision"] == "int8" else r for r in records]
    policy = load_rollout_policy(waves=[0.1, 0.5, 1.0], soak_seconds=0, success_threshold=1.0, error_threshold=0.2)
    store = RolloutStore.local(home)
    second = packages.build_and_publish(home, cohort, matrix, fp32, "run-2")
    r = controller.start(home, store, cohort.id, "perception", VEHICLES, policy, first.releases[0].sha256)
    return {"home": home, "cohort": cohort, "vehicles": vehicles, "first": first, "second": second, "rollout": r,
            "store": store, "policy": policy, "now": now}


def _run_wave(f, r, faults=None):
    return [f["vehicles"][v].cycle(r.rollout_id, "perception", f["now"], (faults or {}).get(v)) for v in r.wave_vehicles()]


def test_a_healthy_rollout_goes_wave_by_wave_to_the_whole_cohort(fleet):
    f, r = fleet, fleet["rollout"]
    new = f["second"].releases[0].sha256
    assert r.waves == [1, 5, 10] and r.target_sha256 == new
    outside = next(v for v in VEHICLES if v not in r.wave_vehicles())
    f["vehicles"][outside].cycle(r.rollout_id, "perception", f["now"])
    assert f["vehicles"][outside].primary.installed()["perception"].sha256 == f["first"].releases[0].sha256, \
        "a vehicle outside the wave keeps its image"
    actions = []
    for _ in range(len(r.waves)):
        r, action, verdict = controller.step(f["home"], f["store"], r, _run_wave(f, r), registered_keys(f["home"]), f["policy"])
        assert verdict.success_rate == 1.0, verdict
        actions.append(action)
    assert actions == ["advanced", "advanced", "complete"] and r.status == "complete"
    for sim in f["vehicles"].values():
        sim.cycle(r.rollout_id, "perception", f["now"])
        assert sim.primary.installed()["perception"].sha256 == new
    kinds = [e["kind"] for e in f["store"].events(r.rollout_id)]
    assert kinds == ["created", "wave_advanced", "wave_advanced", "completed"]


def test_faults_in_a_wave_pause_and_roll_the_cohort_back(fleet):
    f, r = fleet, fleet["rollout"]
    r, action, _ = controller.step(f["home"], f["store"], r, _run_wave(f, r), registered_keys(f["home"]), f["policy"])
    assert action == "advanced"
    wave = r.wave_vehicles()
    faults = {wave[1]: "boot_fail", wave[2]: "corrupt_flash", wave[3]: "slow"}
    r, action, verdict = controller.step(f["home"], f["store"], r, _run_wave(f, r, faults), registered_keys(f["home"]), f["policy"])
    assert action == "rolled_back" and r.status == "rolled_back"
    assert set(verdict.failed) == set(faults) and "did not boot" in verdict.failed[wave[1]]
    assert "not the rolled-out" in verdict.failed[wave[2]] and "ms >" in verdict.failed[wave[3]]
    director = Uptane(f["home"]).director(f["cohort"].id).targets().targets
    [entry] = [t for p, t in director.items() if p.startswith("perception/")]
    assert entry.hashes["sha256"] == f["first"].releases[0].sha256 and "vehicles" not in entry.unrecognized_fields["custom"]
    for v in wave:  # the updated vehicles go back to package 1 on their next cycle
        f["vehicles"][v].cycle("rollback", "perception", f["now"] + timedelta(minutes=1))
        assert f["vehicles"][v].primary.installed()["perception"].sha256 == f["first"].releases[0].sha256
    events = f["store"].events(r.rollout_id)
    assert events[-1]["kind"] == "rolled_back" and events[-1]["detail"]["error_rate"] >= 0.2


def test_a_forged_report_never_counts_as_success(fleet):
    import json

    f, r = fleet, fleet["rollout"]
    [v] = r.wave_vehicles()
    honest = f["vehicles"][v].cycle(r.rollout_id, "perception", f["now"])
    other = next(x for x in VEHICLES if x != v)
    forged = f["vehicles"][other].cycle(r.rollout_id, "perception", f["now"])  # signed by another vehicle
    payload = json.loads(__import__("base64").b64decode(forged["payload"]))
    payload["vehicle_id"] = v
    forged["payload"] = __import__("base64").b64encode(json.dumps(payload).encode()).decode()
    verdict = controller.evaluate(r, [forged], registered_keys(f["home"]), f["policy"])
    assert verdict.healthy == [] and verdict.rejected and verdict.missing == [v]
    assert controller.evaluate(r, [honest], registered_keys(f["home"]), f["policy"]).healthy == [v]


def test_the_rollout_sensor_advances_on_reports_in_the_inbox(fleet, monkeypatch):
    import dagster as dg

    from avops.rollout.inbox import deliver
    from sensors.rollout import rollout_sensor

    f, r = fleet, fleet["rollout"]
    monkeypatch.setenv("AVOPS_HOME", str(f["home"].root))
    monkeypatch.setenv("AVOPS_ROLLOUT_POLICY", str(_policy_file(f, monkeypatch)))
    for env, v in zip(_run_wave(f, r), r.wave_vehicles()):
        deliver(f["home"], r.rollout_id, v, env)
    result = rollout_sensor(dg.build_sensor_context())
    assert f"{r.rollout_id}: advanced" in result.skip_message
    assert f["store"].get(r.rollout_id).wave == 1


def _policy_file(f, monkeypatch):
    import yaml

    path = f["home"].root / "rollout-test.yaml"
    path.write_text(yaml.safe_dump({"waves": [0.1, 0.5, 1.0], "soak_seconds": 0, "success_threshold": 1.0, "error_threshold": 0.2,
                                    "health": {"max_inference_ms": 50}}))
    return path


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rollout_state_lives_in_the_registry_database_and_its_log_is_append_only(backend, tmp_path, request):
    import psycopg
    import sqlite3

    from avops.registry import ModelRegistry
    from avops.rollout.store import Rollout

    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as con:
            con.execute("DROP DATABASE IF EXISTS rollout_state")
            con.execute("CREATE DATABASE rollout_state")
        reg = ModelRegistry(url.rsplit("/", 1)[0] + "/rollout_state")
    else:
        reg = ModelRegistry(f"sqlite:///{tmp_path / 'models.db'}")
    store = RolloutStore(reg)
    r = Rollout("r1", "c", "perception", "perception/x86-ecu/e.onnx", "a" * 64, None, ["v1", "v2"], [1, 2], 0, "active",
                "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00")
    store.create(r, {"why": "test"})
    store.update("r1", "wave_advanced", {"ok": True}, wave=1)
    assert store.get("r1").wave == 1 and [e["kind"] for e in store.events("r1")] == ["created", "wave_advanced"]
    assert [x.rollout_id for x in store.active()] == ["r1"]
    with pytest.raises(ValueError, match="cannot change"):
        store.update("r1", "x", {}, vehicles="[]")
    if backend == "postgres":
        with psycopg.connect(reg.url, autocommit=True) as con, pytest.raises(psycopg.Error, match="append-only"):
            con.execute("DELETE FROM rollout_events")
    else:
        con = sqlite3.connect(tmp_path / "models.db")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE rollout_events SET kind = 'x'")
        con.close()
