"""Vehicles' public keys, registered at end of line: the only keys an ECU version report may be signed with."""

from __future__ import annotations

import json
from pathlib import Path

from securesystemslib.signer import Key

from avops.home import HomeLayout
from avops.store import atomic_write_json


def vehicle_keys_path(home: HomeLayout) -> Path:
    return home.root / "ota" / "vehicle_keys.json"


def register(home: HomeLayout, vehicle_id: str, key: Key) -> None:
    p = vehicle_keys_path(home)
    keys = json.loads(p.read_text()) if p.exists() else {}
    keys[vehicle_id] = {"keyid": key.keyid, "key": key.to_dict()}
    atomic_write_json(p, keys)


def registered_keys(home: HomeLayout) -> dict[str, Key]:
    p = vehicle_keys_path(home)
    raw = json.loads(p.read_text()) if p.exists() else {}
    return {v: Key.from_dict(d["keyid"], dict(d["key"])) for v, d in raw.items()}
