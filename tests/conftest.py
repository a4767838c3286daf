"""Shared fixtures: a tiny simulated fleet in a temporary AVOPS_HOME."""

import shutil
from pathlib import Path

import pytest
import yaml

from avops.fleet.simulator import simulate_fleet
from avops.home import HomeLayout
from avops.fleet_registry import load_registry

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
