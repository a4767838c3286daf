"""Ingest a fleet's BMS reference-test logs into one content-addressed table set.

Every landed log is read and validated (``avops.battery.bms_log``); a bad one is quarantined
with its reason and every other log is still ingested. A log whose metadata names another fleet
or unit than its landing path, or a chemistry the fleet does not carry, is quarantined too: a
mislabelled cell would silently train the wrong chemistry's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from avops import datasets
from avops.battery.bms_log import BmsLogError, BmsTest, decode
from avops.battery.config import BatteryConfig
from avops.home import HomeLayout
from avops.ingest.ingest import landed_files
from avops.ingest.quarantine import IngestError, Quarantined, quarantine
from avops.store import ObjectStore, open_store

ASSET_KEY = "battery/reference_tests"
INGEST_VERSION = "1"


@dataclass
class BmsIngestResult:
    manifest: datasets.Manifest
    inputs: list[dict]
    quarantined: list[Quarantined]
    tests: int


def _check(test: BmsTest, path: Path, rel: Path, fleet: str, chemistry: str) -> None:
    unit = rel.parts[1] if len(rel.parts) >= 3 else None
    if test.fleet != fleet or test.unit_id != unit:
        raise IngestError(path, "cohort_mismatch", f"the log says fleet {test.fleet!r}, unit {test.unit_id!r}; "
                                                   f"its landing path says fleet {fleet!r}, unit {unit!r}")
    if test.chemistry != chemistry:
        raise IngestError(path, "cohort_mismatch", f"the log says chemistry {test.chemistry!r}; fleet {fleet!r} carries {chemistry!r}")


def tables_from(tests: list[tuple[BmsTest, str, str]]) -> dict[str, pa.Table]:
    """``tests`` (one row per reference test) and ``samples`` (every sample, keyed by test_id)."""
    tests = sorted(tests, key=lambda x: (x[0].cell_id, x[0].started_at))
    meta = pa.table({
        "test_id": [t.test_id for t, _, _ in tests], "fleet": [t.fleet for t, _, _ in tests],
        "unit_id": [t.unit_id for t, _, _ in tests], "cell_id": [t.cell_id for t, _, _ in tests],
        "chemistry": [t.chemistry for t, _, _ in tests],
        "started_at": pa.array([t.started_at for t, _, _ in tests], pa.timestamp("us", tz="UTC")),
        "usage_cycles": pa.array([t.usage_cycles for t, _, _ in tests], pa.int32()),
        "file": [f for _, f, _ in tests], "sha256": [d for _, _, d in tests],
        "samples": pa.array([len(t.time_s) for t, _, _ in tests], pa.int32()),
    })
    n = [len(t.time_s) for t, _, _ in tests]
    cat = lambda name, dt: pa.array(np.concatenate([getattr(t, name) for t, _, _ in tests]) if tests else [], dt)  # noqa: E731
    samples = pa.table({
        "test_id": pa.array(np.repeat([t.test_id for t, _, _ in tests], n) if tests else [], pa.string()),
        "time_s": cat("time_s", pa.float64()), "current_a": cat("current_a", pa.float32()),
        "voltage_v": cat("voltage_v", pa.float32()), "temperature_c": cat("temperature_c", pa.float32()),
        "step": pa.array(np.concatenate([t.step for t, _, _ in tests]).astype(str) if tests else [], pa.string()),
    })
    return {"tests": meta, "samples": samples}


def ingest_fleet(home: HomeLayout, config: BatteryConfig, fleet: str, store: ObjectStore | None = None) -> BmsIngestResult:
    store = store or open_store(home)
    chemistry = config.fleet(fleet).chemistry
    good: list[tuple[BmsTest, str, str]] = []
    inputs, bad = [], []
    for path in landed_files(home.bms / fleet):
        rel = path.relative_to(home.bms)
        data = path.read_bytes()
        try:
            test = decode(path, data)
            _check(test, path, rel, fleet, chemistry)
        except BmsLogError as e:
            bad.append(quarantine(path, home.bms, home.quarantine / "bms", IngestError(path, e.reason, e.detail)))
            continue
        except IngestError as e:
            bad.append(quarantine(path, home.bms, home.quarantine / "bms", e))
            continue
        digest = store.put_bytes(data)  # the log itself, so lineage can be re-verified from the store
        good.append((test, str(rel), digest))
        inputs.append({"file": str(rel), "sha256": digest})
    if not good:
        raise ValueError(f"{home.bms / fleet}: no usable BMS reference-test logs"
                         + (f" ({len(bad)} quarantined under {home.quarantine / 'bms' / fleet}: read the .reason.json files)" if bad else
                            " (has the fleet delivered any? `avops fleet simulate-batteries` writes simulated ones)"))
    manifest = datasets.publish(store, home.refs, ASSET_KEY, fleet, tables_from(good),
                                {"ingest_version": INGEST_VERSION, "chemistry": chemistry,
                                 "inputs": sorted(inputs, key=lambda r: r["file"]),
                                 "quarantined": [q.__dict__ for q in bad]})
    return BmsIngestResult(manifest, inputs, bad, len(good))


def load_reference_tests(home: HomeLayout, fleet: str, store: ObjectStore | None = None) -> tuple[datasets.Manifest, pa.Table, pa.Table]:
    store = store or open_store(home)
    m = datasets.current(store, home.refs, ASSET_KEY, fleet)
    if m is None:
        raise LookupError(f"{ASSET_KEY}[{fleet}] has not been materialized: ingest the fleet's BMS logs first")
    return m, datasets.read_table(store, m, "tests"), datasets.read_table(store, m, "samples")
