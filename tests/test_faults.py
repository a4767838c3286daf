"""Faults on the production profile (objects on S3, registry and audit log on Postgres, Dagster on Postgres).

* kill -9 of a run in the middle of writing an engine, a package and a curated set: nothing
  half-written is visible to any reader, the registry and the audit log stay consistent, a vehicle
  still verifies and installs what the director assigns, and a retry completes;
* two runs for different cohorts at the same time: both succeed and nothing is corrupted.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from avops.features.tables import build_feature_table
from avops.fleet.simulator import simulate_fleet
from avops.fleet_registry import load_registry, project_root
from avops.home import HomeLayout
from avops.ingest.ingest import ingest_partition
from avops.registry import ModelRegistry
from avops.s3store import S3ObjectStore
from avops.store import sha256_file

ROOT = Path(__file__).resolve().parent.parent
COHORT = "orin-my2024-eu"
FLEET = {
    "cohorts": [{"id": COHORT, "platform": "vw-mqb-phev", "model_year": 2024, "soc": "orin", "region": "eu", "vehicle_count": 3,
                 "dbc": "opendbc:vw_mqb", "powertrain_calibration": "PTC-MQB-24.1", "loggers": ["blf", "blf", "blf"],
                 "ecus": [{"name": "adas_domain", "hardware_id": "NV-ORIN-X-64", "firmware": "6.0.8"},
                          {"name": "gateway", "hardware_id": "GW-MQB-H3", "firmware": "0520", "soc": "s32g3"}]}],
    "simulation": {"seed": 11, "start_date": "2026-01-10",
                   "profiles": {"pdm": {"drives_per_vehicle": 6, "drive_seconds": 40, "days_between_drives": 30, "camera_hz": 1,
                                        "lidar_hz": 1, "radar_hz": 1, "can_batch_hz": 10}}},
}
KEYS = ("features/telemetry", "maintenance/evaluation", "compile/maintenance_engines", "compile/compatibility", "ota/packages")


def _database(postgres_url: str, name: str) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name}")
        con.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture()
def fleet_on_s3(tmp_path, s3, postgres_url, monkeypatch):
    """One CAN-only cohort ingested and featurized with its objects on S3; the registry on Postgres."""
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(FLEET))
    raw = yaml.safe_load((project_root() / "config" / "maintenance.yaml").read_text())
    raw["components"]["brake_pads"]["gates"] = {"mae_upper_bound_mm": {"max": 10.0, "min_samples": 3, "on_insufficient": "warn"}}
    (tmp_path / "maintenance.yaml").write_text(yaml.safe_dump(raw))
    prefix = f"faults-{tmp_path.name}"
    env = {"AVOPS_OBJECT_STORE": s3.url(prefix), "AVOPS_REGISTRY_URL": _database(postgres_url, "avops_faults")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    home = HomeLayout(tmp_path / "home")
    fleet = load_registry(tmp_path / "fleet.yaml")
    simulate_fleet(fleet, home, profile="pdm")
    ingest_partition(home, fleet.cohort(COHORT))
    build_feature_table(home, fleet.cohort(COHORT))
    return {"root": tmp_path, "home": home, "env": {**os.environ, **env}, "url": s3.url(prefix)}


def _worker(f, first: int, rounds: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.fault_worker", str(f["root"]), str(first), str(rounds)], cwd=ROOT,
                            env=f["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_while(proc: subprocess.Popen, marker: str, delay: float) -> list[str]:
    """Read the worker's progress until ``marker``, then SIGKILL it ``delay`` seconds into that write."""
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip())
        if line.startswith(marker):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return seen
    proc.wait(timeout=30)
    pytest.fail(f"the worker ended before {marker!r}: {seen[-20:]}")


def _consistent(f) -> list[str]:
    """What any reader would see now: the local files a reader opens, and the bucket from a machine with an empty cache."""
    home = f["home"]
    store = S3ObjectStore(f["url"], f["root"] / f"reader-cache-{time.monotonic_ns()}")
    problems = []
    for p in home.objects.rglob("*"):  # the local cache is served without re-hashing: it may only hold whole objects
        if p.is_file() and not p.name.startswith(".") and p.parent.name + p.name != sha256_file(p)[: 2] + sha256_file(p)[2:]:
            problems.append(f"cache: {p.relative_to(home.root)} does not hash to its name")
    for folder in (home.root / "ota", home.refs):  # TUF metadata, refs of the dataset repository, logs
        for p in folder.rglob("*.json") if folder.exists() else ():
            if p.name.startswith("."):
                continue  # a temporary file: no reader looks it up
            try:
                json.loads(p.read_bytes())
            except ValueError as exc:
                problems.append(f"{p.relative_to(home.root)}: half-written ({exc})")
    for key in KEYS:
        ref = store.read_ref(home.refs, key, COHORT)
        if ref is None:
            continue
        body = store.get_json(ref["manifest"])  # fetched and checked against its digest
        for name, t in body["tables"].items():
            if not store.verify(t["sha256"]):
                problems.append(f"{key}: table {name} {t['sha256'][:12]} missing or changed")
        for e in body.get("engines", []):
            if not store.verify(e["engine_sha256"]):
                problems.append(f"{key}: engine {e['engine_sha256'][:12]} missing or changed")
    registry = ModelRegistry(f["env"]["AVOPS_REGISTRY_URL"], audit_keys=home.root / "audit" / "keys")
    report = registry.audit.verify()
    problems += [f"audit: {p}" for p in report.problems]
    for v in registry.list("maintenance", cohort=COHORT):
        if not store.verify(v.artifact_sha256):
            problems.append(f"registry: maintenance v{v.version} names {v.artifact_sha256[:12]}, which is not in the store")
    log = home.root / "ota" / "releases" / f"{COHORT}.jsonl"
    if log.exists():
        [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    ota = home.root / "ota"
    if (ota / "image/metadata/1.root.json").exists() and (ota / f"director/{COHORT}/metadata/1.root.json").exists():
        # once both repositories exist, a gateway verifies and installs what its director assigns
        from avops.fleet.ecus import SimulatedVehicle
        from avops.rollout.reports import verify_report
        from avops.rollout.vehicle_keys import registered_keys

        vehicle = load_registry(f["root"] / "fleet.yaml").cohort(COHORT).vehicle_ids()[0]
        sim = SimulatedVehicle(home, COHORT, vehicle, "GW-MQB-H3", ecu="gateway")
        report, why = verify_report(sim.cycle("fault-check", "maintenance", datetime.now(timezone.utc)), registered_keys(home))
        if report is None or not report.booted or report.health.get("note"):
            problems.append(f"vehicle: {why or report.health}")
    from avops.versioning.factory import open_repository

    repo = open_repository("embedded", "curated-sets", home=home)
    if (home.refs / "versioning").exists():
        head = repo.resolve("main")
        problems += [f"curated sets: {p}" for p in repo.verify(head)]
    return problems


def test_kill_9_mid_write_leaves_nothing_half_written_and_a_retry_completes(fleet_on_s3):
    f = fleet_on_s3
    rng = random.Random(9)
    killed_in = []
    for n, marker in enumerate(("writing engine", "writing package", "writing curated set", "writing checkpoint")):
        proc = _worker(f, first=10 * n, rounds=50)
        seen = _kill_while(proc, marker, rng.uniform(0.1, 1.2))
        assert proc.returncode == -signal.SIGKILL, seen[-5:]
        killed_in.append(seen[-1])
        problems = _consistent(f)
        assert problems == [], f"after SIGKILL during {seen[-1]!r}: {problems}"
    assert [k.rsplit(" ", 1)[0] for k in killed_in] == ["writing engine", "writing package", "writing curated set", "writing checkpoint"]
    retry = _worker(f, first=100, rounds=1)  # the retry completes
    out, _ = retry.communicate(timeout=600)
    assert retry.returncode == 0 and "round 100 done" in out, out[-3000:]
    assert _consistent(f) == []


def test_two_cohorts_at_once_on_postgres_and_s3(tiny_home, tiny_registry_path, tmp_path, s3, postgres_url, monkeypatch):
    """Two runs (ingest + features + parity check) for two cohorts, started together as two processes against one Dagster
    instance on Postgres and one bucket: both succeed, and each cohort's published tables are intact."""
    url = _database(postgres_url, "dagster_two_cohorts").replace("postgresql://", "postgresql+psycopg2://")
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}, "storage": {"postgres": {"postgres_url": url}}}))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "AVOPS_HOME": str(tiny_home.root), "AVOPS_FLEET_REGISTRY": str(tiny_registry_path),
           "AVOPS_OBJECT_STORE": s3.url(f"two-{tmp_path.name}"), "AVOPS_EXECUTOR": "in_process"}
    cohorts = [c.id for c in load_registry(tiny_registry_path).cohorts]
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("cohorts", cohorts)
    script = ("import sys, dagster as dg\n"
              "from avops_assets.definitions import defs\n"
              "from avops_assets.jobs import MAIN_JOB\n"
              "with dg.DagsterInstance.get() as inst:\n"
              "    r = defs().resolve_job_def(MAIN_JOB).execute_in_process(partition_key=sys.argv[1], instance=inst,\n"
              "        asset_selection=[dg.AssetKey(['ingest', 'raw_drives']), dg.AssetKey(['features', 'telemetry'])],\n"
              "        raise_on_error=False)\n"
              "    sys.exit(0 if r.success else 1)\n")
    procs = {c: subprocess.Popen([sys.executable, "-c", script, c], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for c in cohorts}
    outs = {c: p.communicate(timeout=600)[0] for c, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), {c: o[-2000:] for c, o in outs.items()}
    store = S3ObjectStore(env["AVOPS_OBJECT_STORE"], tmp_path / "reader-cache")
    for c in cohorts:
        for key in ("ingest/raw_drives", "features/telemetry"):
            ref = store.read_ref(tiny_home.refs, key, c)
            assert ref is not None, f"{key}[{c}] was not published"
            body = store.get_json(ref["manifest"])
            assert body["partition"] == c and all(store.verify(t["sha256"]) for t in body["tables"].values())
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.is_success for r in runs)
        assert {r.tags.get("dagster/partition") for r in runs} == set(cohorts)
