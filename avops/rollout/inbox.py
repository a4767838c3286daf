"""Where vehicles' signed version reports arrive: ``ota/reports/<rollout_id>/<vehicle>-<n>.json``.

In a deployment a small HTTPS endpoint writes these files (or an S3 prefix); the controller only
ever trusts what verifies against the vehicle's registered key.
"""

from __future__ import annotations

import json
from pathlib import Path

from avops.home import HomeLayout
from avops.store import atomic_write_json


def inbox(home: HomeLayout, rollout_id: str) -> Path:
    return home.root / "ota" / "reports" / rollout_id


def deliver(home: HomeLayout, rollout_id: str, vehicle_id: str, envelope: dict) -> Path:
    folder = inbox(home, rollout_id)
    n = len(list(folder.glob(f"{vehicle_id}-*.json"))) if folder.exists() else 0
    path = folder / f"{vehicle_id}-{n:04d}.json"
    atomic_write_json(path, envelope)
    return path


def collect(home: HomeLayout, rollout_id: str) -> list[dict]:
    folder = inbox(home, rollout_id)
    out = []
    for p in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            out.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            continue  # a torn or junk upload is not a report; verification would reject it anyway
    return out
