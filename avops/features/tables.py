"""Feature tables per cohort: the offline computation over a cohort's ingested telemetry, published."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from avops import datasets
from avops.can.signal_map import load_signal_map
from avops.features.definitions import TELEMETRY_FEATURES, FeatureDef, catalog_version
from avops.features.offline import compute_offline
from avops.features.parity import ParityReport, check_parity, golden_windows
from avops.features.signals import Platform, ResolvedFeature, resolve_features
from avops.fleet_registry import Cohort
from avops.home import HomeLayout
from avops.ingest.ingest import ASSET_KEY as RAW_KEY
from avops.query import connect_manifest
from avops.store import ObjectStore, open_store

FEATURES_KEY = "features/telemetry"
FEATURE_TABLE = "features"
CODE_VERSION = f"features-1-{catalog_version(TELEMETRY_FEATURES)}"


def platform_for(cohort: Cohort) -> Platform:
    return Platform.from_signal_map(cohort.dbc_spec, load_signal_map())


def spine_from_drives(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """One feature row per drive, as of the drive's last sample: what a vehicle reports at key-off."""
    return con.sql("SELECT vehicle_id, drive_id, end_time AS as_of FROM drives ORDER BY vehicle_id, as_of, drive_id").to_arrow_table()


@dataclass
class FeatureTable:
    manifest: datasets.Manifest
    table: pa.Table
    resolved: list[ResolvedFeature]
    unavailable: dict[str, str]
    raw_manifest: datasets.Manifest


def _raw(store: ObjectStore, home: HomeLayout, cohort: str) -> datasets.Manifest:
    m = datasets.current(store, home.refs, RAW_KEY, cohort)
    if m is None:
        raise LookupError(f"{RAW_KEY}[{cohort}] has not been materialized; ingest the cohort's drives first")
    return m


def build_feature_table(home: HomeLayout, cohort: Cohort, features: list[FeatureDef] = TELEMETRY_FEATURES) -> FeatureTable:
    """Compute every feature the platform carries for every drive, and publish the table."""
    store = open_store(home)
    raw = _raw(store, home, cohort.id)
    resolved, unavailable = resolve_features(platform_for(cohort), features)
    con = connect_manifest(store, raw)
    try:
        table = compute_offline(con, resolved, spine_from_drives(con))
    finally:
        con.close()
    versions = {f.name: f.version for f in features if f.name not in unavailable}
    m = datasets.publish(store, home.refs, FEATURES_KEY, cohort.id, {FEATURE_TABLE: table}, {
        "raw_manifest": raw.digest, "catalog_version": catalog_version(features), "feature_versions": versions,
        "unavailable": unavailable, "dbc": cohort.dbc_spec,
    })
    return FeatureTable(m, table, resolved, unavailable, raw)


def load_feature_table(home: HomeLayout, cohort: str) -> tuple[datasets.Manifest, pa.Table]:
    store = open_store(home)
    m = datasets.current(store, home.refs, FEATURES_KEY, cohort)
    if m is None:
        raise LookupError(f"{FEATURES_KEY}[{cohort}] has not been materialized")
    return m, datasets.read_table(store, m, FEATURE_TABLE)


def verify_parity(home: HomeLayout, cohort: Cohort, per_vehicle: int = 3) -> ParityReport:
    """Recompute the golden windows online from the exact raw tables the published features read."""
    store = open_store(home)
    m, table = load_feature_table(home, cohort.id)
    raw = datasets.Manifest(m.body["raw_manifest"], store.get_json(m.body["raw_manifest"]))  # type: ignore[arg-type]
    resolved, _ = resolve_features(platform_for(cohort), TELEMETRY_FEATURES)
    resolved = [f for f in resolved if f.name in table.column_names]
    con = connect_manifest(store, raw)
    try:
        return check_parity(con, resolved, table, golden_windows(table, per_vehicle))
    finally:
        con.close()
