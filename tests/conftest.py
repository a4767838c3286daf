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
