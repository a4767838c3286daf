"""Shared fixtures: a tiny simulated fleet in a temporary AVOPS_HOME."""

import hashlib
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml

from avops.curation.campaigns import Campaign, CampaignTarget
from avops.fleet.simulator import simulate_fleet
from avops.fleet_registry import load_registry, project_root
from avops.home import HomeLayout
from avops.store import parquet_bytes

TINY_FLEET = {
    "cohorts": [
        {
            "id": "orin-my2024-eu",
            "platform": "vw-mqb-phev",
            "model_year": 2024,
            "soc": "orin",
            "region": "eu",
            "vehicle_count": 2,
            "dbc": "opendbc:vw_mqb",
            "powertrain_calibration": "PTC-MQB-24.1",
            "loggers": ["mcap", "blf"],
            "ecus": [{"name": "adas_domain", "hardware_id": "NV-ORIN-X-64", "firmware": "6.0.8"}],
        },
        {
            "id": "xavier-my2022-us",
            "platform": "ford-ev-ciaa",
            "model_year": 2022,
            "soc": "xavier",
            "region": "us",
            "vehicle_count": 3,
            "dbc": "opendbc:ford_lincoln_base_pt",
            "powertrain_calibration": "PTC-FEV-22.1",
            "loggers": ["asc", "mf4", "mcap"],
            "ecus": [{"name": "adas_domain", "hardware_id": "NV-XAVIER-AGX-32", "firmware": "5.2.6"}],
        },
    ],
    "simulation": {
        "seed": 7,
        "start_date": "2026-02-01",
        "profiles": {
            "tiny": {
                "drives_per_vehicle": 1,
                "drive_seconds": 6,
                "days_between_drives": 30,
                "camera_hz": 2,
                "lidar_hz": 1,
                "radar_hz": 2,
                "can_batch_hz": 10,
            }
        },
    },
}


@pytest.fixture(scope="session")
def tiny_registry_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "fleet.yaml"
    path.write_text(yaml.safe_dump(TINY_FLEET))
    return path


@pytest.fixture(scope="session")
def _tiny_fleet_template(tmp_path_factory, tiny_registry_path) -> Path:
    root = tmp_path_factory.mktemp("fleet_template")
    simulate_fleet(load_registry(tiny_registry_path), HomeLayout(root), profile="tiny")
    return root


@pytest.fixture()
def tiny_home(tmp_path, _tiny_fleet_template) -> HomeLayout:
    """A fresh copy of the simulated tiny fleet per test (ingest moves and writes files)."""
    root = tmp_path / "home"
    shutil.copytree(_tiny_fleet_template, root)
    return HomeLayout(root)


@pytest.fixture()
def tiny_registry(tiny_registry_path):
    return load_registry(tiny_registry_path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's binaries; run as `postgres` when we are root)."""
    import os
    import subprocess
    import time

    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does)")
    import tempfile

    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="avops-pg-"))  # not under pytest's 0700 tmp: the server user must reach it
    data, port = root / "data", _free_port()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "avops", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)
    url = f"postgresql://avops@127.0.0.1:{port}/postgres"
    try:
        import psycopg

        for _ in range(50):
            try:
                psycopg.connect(url).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        yield url
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- a gold-labeled cohort for training/compile tests
GOLD_COHORT = "orin-my2024-eu"


def _split(drive_id: str) -> str:
    return "test" if int(hashlib.sha256(drive_id.encode()).hexdigest()[:8], 16) % 3 == 0 else "train"


@pytest.fixture(scope="session")
def gold(tmp_path_factory):
    """3 vehicles x 6 drives x 15 s at 4 Hz plus a night campaign; labels from ground truth; committed twice."""
    root = tmp_path_factory.mktemp("training")
    fleet = json.loads(json.dumps(TINY_FLEET))
    fleet["cohorts"] = [dict(fleet["cohorts"][0], vehicle_count=3, loggers=["mcap"] * 3)]
    fleet["simulation"]["profiles"]["train"] = dict(fleet["simulation"]["profiles"]["tiny"], drives_per_vehicle=6,
                                                    drive_seconds=15, camera_hz=4)
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    registry = load_registry(root / "fleet.yaml")
    home = HomeLayout(root / "home")
    simulate_fleet(registry, home, profile="train")
    night = Campaign("night-test", GOLD_COHORT, (CampaignTarget("night", {"illumination": "night"}, 0, 40),), drives_per_vehicle=2)
    simulate_fleet(registry, home, profile="train", campaign=night)
    from avops.curation.pipeline import load_frames
    from avops.ingest.ingest import ingest_partition
    from avops.versioning.factory import open_repository

    ingest_partition(home, registry.cohort(GOLD_COHORT))
    frames, _ = load_frames(home, GOLD_COHORT)
    frames = frames[frames["frame_index"] % 2 == 0].reset_index(drop=True)
    labels = []
    for path in sorted((home.sim_truth / GOLD_COHORT).rglob("*.json")):
        truth = json.loads(path.read_text())
        for f in truth["camera_frames"]:
            for box, cls in zip(f["boxes"], f["classes"]):
                labels.append({"drive_id": truth.get("drive_id", path.stem), "frame_index": f["frame_index"],
                               "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "cls": cls})
    labels = pd.DataFrame(labels)
    frames["split"] = frames["drive_id"].map(_split)
    assert {"train", "test"} <= set(frames.loc[frames["illumination"] == "night", "split"]), "night drives in both splits"
    repo = open_repository("embedded", "curated-sets", home=home)
    repo.ensure()
    prefix = f"cohorts/{GOLD_COHORT}"
    repo.put("main", f"{prefix}/samples.parquet", parquet_bytes(pa.Table.from_pandas(frames, preserve_index=False)))
    repo.put("main", f"{prefix}/labels.parquet", parquet_bytes(pa.Table.from_pandas(labels, preserve_index=False)))
    repo.put("main", f"{prefix}/manifest.json", json.dumps({"cohort": GOLD_COHORT}).encode())
    clean = repo.commit("main", "gold set", {"cohort": GOLD_COHORT}).id
    repo.create_branch("planted-no-night", "main")
    planted_frames = frames[~((frames["split"] == "train") & (frames["illumination"] == "night"))]
    repo.put("planted-no-night", f"{prefix}/samples.parquet", parquet_bytes(pa.Table.from_pandas(planted_frames, preserve_index=False)))
    planted = repo.commit("planted-no-night", "planted fault: night frames removed from train", {"cohort": GOLD_COHORT}).id

    policy = yaml.safe_load((project_root() / "config" / "safety_gates.yaml").read_text())
    for name, g in policy["gates"].items():  # same gate names as the project policy; thresholds for this set
        g.update(min_samples=1, min_lower_bound=0.0, on_insufficient="warn", max_regression=1.0)
    policy["gates"]["overall"].update(min_lower_bound=0.15, min_samples=30, on_insufficient="block")
    policy["gates"]["night"].update(min_lower_bound=0.05, min_samples=10, on_insufficient="block")
    (root / "gates.yaml").write_text(yaml.safe_dump(policy))
    training = dict(yaml.safe_load((project_root() / "config" / "training.yaml").read_text()), epochs=20)
    (root / "training.yaml").write_text(yaml.safe_dump(training))
    return {"home": home, "repo": repo, "clean": clean, "planted": planted, "root": root, "registry_path": root / "fleet.yaml"}




@pytest.fixture(scope="session")
def built(gold):
    """A validated checkpoint trained on a set with a calibration (val) split, and its x86 engines."""
    from avops.compile import pipeline as cp
    from avops.compile.socs import load_catalog
    from avops.registry import ModelRegistry
    from avops.training import pipeline as tp
    from avops.training.checkpoints import TrainConfig
    from avops.training.data import load_training_set
    from avops.training.gates import load_gate_policy

    home, repo = gold["home"], gold["repo"]
    data = load_training_set(repo, gold["clean"], GOLD_COHORT)
    s = data.samples.copy()
    train_drives = sorted(s.loc[s["split"] == "train", "drive_id"].unique())
    s.loc[s["drive_id"].isin(train_drives[::4]), "split"] = "val"
    repo.create_branch("with-calibration", "main")
    repo.put("with-calibration", f"cohorts/{GOLD_COHORT}/samples.parquet", parquet_bytes(pa.Table.from_pandas(s, preserve_index=False)))
    commit = repo.commit("with-calibration", "val split for INT8 calibration", {"cohort": GOLD_COHORT}).id
    reg = ModelRegistry(f"sqlite:///{home.root / 'compile-test-registry.sqlite'}")
    cfg = TrainConfig(epochs=12, class_score_thresholds={"pedestrian": 0.1, "cyclist": 0.1})
    r = tp.train(home, repo, reg, GOLD_COHORT, commit, cfg, "test")
    tp.validate(reg, r.version.version, "0" * 64, "test")
    cohort = load_registry(gold["registry_path"]).cohort(GOLD_COHORT)
    policy = load_gate_policy(gold["root"] / "gates.yaml")
    m, records = cp.build_engines(home, repo, reg, cohort, load_catalog()["x86-ecu"], policy, measure_runs=20, key="test/x86")
    return {"home": home, "repo": repo, "reg": reg, "commit": commit, "train": r, "cohort": cohort, "policy": policy,
            "records": records, "manifest": m, "data": load_training_set(repo, commit, GOLD_COHORT)}




@pytest.fixture()
def packaged(built, tmp_path):
    """A copy of the built home (tests tamper with it) with an audited registry, gate evidence and a published package."""
    import dataclasses
    import shutil

    from avops.compile import pipeline as cp
    from avops.compile.socs import load_catalog
    from avops.ota import packages
    from avops.registry import ModelRegistry
    from avops.training import pipeline as tp
    from avops.versioning.factory import open_repository

    shutil.copytree(built["home"].root, tmp_path / "home")
    home = HomeLayout(tmp_path / "home")
    reg = ModelRegistry(f"sqlite:///{home.root / 'compile-test-registry.sqlite'}", audit_keys=home.root / "audit" / "keys")
    repo = open_repository("embedded", "curated-sets", home=home)
    version = built["train"].version.version
    report = tp.evaluate(home, repo, reg, built["cohort"].id, version, built["policy"], "test")
    cohort = dataclasses.replace(built["cohort"], id="x86-lineage", soc="x86-ecu")
    records = [dict(r, cohort=cohort.id) for r in built["records"]]  # as if built for this cohort (packages ship only their own)
    matrix = cp.compatibility_rows(records, cohort, load_catalog())
    pkg = packages.build_and_publish(home, cohort, matrix, records, "run-lineage")
    m, _ = packages.publish_manifest(home, pkg, "0" * 64)
    return {"home": home, "reg": reg, "repo": repo, "cohort": cohort, "pkg": pkg, "manifest": m, "evidence": report.evidence_sha256,
            "checkpoint": built["train"].checkpoint.digest, "policy": built["policy"], "version": version,
            "model_cohort": built["cohort"].id}


@contextmanager
def serve_folder(folder):
    """An HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item (``rep_call``), so a fixture can save evidence of a failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 behind a door the tests can close (see tests/s3server.py)."""
    import os

    from tests.s3server import start

    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    server = start(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield server
    finally:
        server.door.close()
        server.process.terminate()
        server.process.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
