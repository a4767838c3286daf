"""Per cohort: is the telemetry the production maintenance model reads still what it was trained on?

Two signals, each cheap enough for a sensor tick:

* **drift**: every sample since the model's training cut-off against the reference sorted at
  training time (KS per quantity, Benjamini–Hochberg, effect and sample floors: ``ks.py``);
* **field accuracy**: the model's estimates against workshop measurements that arrived after
  it was trained (the labels it never saw).

The verdict names what fired and why, so a retrain request can carry its reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from avops import datasets
from avops.drift.ks import ColumnDrift, Reference, detect_drift
from avops.drift.telemetry import telemetry_rows
from avops.features.definitions import DRIFT_SIGNALS
from avops.features.tables import FEATURES_KEY, FEATURE_TABLE, platform_for
from avops.fleet_registry import Cohort
from avops.home import HomeLayout
from avops.ingest.ingest import ASSET_KEY as RAW_KEY
from avops.maintenance.config import DriftSettings, MaintenanceConfig
from avops.maintenance.model import label_rows
from avops.maintenance.pipeline import load_checkpoint, production
from avops.maintenance.service import load_service_orders
from avops.query import connect_manifest
from avops.registry import ModelRegistry
from avops.store import ObjectStore, open_store


@dataclass
class FieldAccuracy:
    measurements: int
    mae_mm: float
    threshold_mm: float
    degraded: bool


@dataclass
class DriftVerdict:
    cohort: str
    model_version: int | None
    trained_until: float | None
    raw_manifest: str | None
    reference_sha256: str | None
    columns: list[ColumnDrift] = field(default_factory=list)
    accuracy: FieldAccuracy | None = None
    drifted: list[str] = field(default_factory=list)
    retrain: bool = False
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    current_rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["columns"] = [asdict(c) for c in self.columns]
        return d


def _current_telemetry(store: ObjectStore, raw: datasets.Manifest, cohort: Cohort, after: float) -> dict[str, np.ndarray]:
    con = connect_manifest(store, raw)
    try:
        return telemetry_rows(con, platform_for(cohort), DRIFT_SIGNALS, after=after)
    finally:
        con.close()


def field_accuracy(home: HomeLayout, cohort: Cohort, components: dict, trained_until: float, config: MaintenanceConfig,
                   settings: DriftSettings) -> FieldAccuracy | None:
    """The production model's error on drives labelled by measurements recorded after its training."""
    store = open_store(home)
    fm = datasets.current(store, home.refs, FEATURES_KEY, cohort.id)
    if fm is None:
        return None
    X = datasets.read_table(store, fm, FEATURE_TABLE).to_pandas()
    try:
        orders = load_service_orders(home, cohort.id, set(cohort.vehicle_ids())).orders
    except FileNotFoundError:
        return None
    new = orders[orders["recorded_at"] > pd.Timestamp(trained_until, unit="s", tz="UTC")]
    errors = []
    for spec in config.components:
        model = components.get(spec.name)
        if model is None or new.empty:
            continue
        labels = label_rows(X, new, spec, config.horizon_days)
        ok = labels["target_mm"].notna().to_numpy()
        if ok.any():
            errors.append(np.abs(model.predict(X[ok]) - labels["target_mm"].to_numpy()[ok]))
    err = np.concatenate(errors) if errors else np.empty(0)
    mae = float(err.mean()) if err.size else math.nan
    degraded = err.size >= settings.field_min_measurements and mae > settings.field_mae_max_mm
    return FieldAccuracy(int(err.size), mae, settings.field_mae_max_mm, bool(degraded))


def evaluate(home: HomeLayout, registry: ModelRegistry, cohort: Cohort, config: MaintenanceConfig) -> DriftVerdict:
    """Drift and field accuracy of one cohort against its production maintenance model."""
    t0 = time.perf_counter()
    store = open_store(home)
    settings = config.drift
    prod = production(registry, cohort.id)
    raw = datasets.current(store, home.refs, RAW_KEY, cohort.id)
    if prod is None or raw is None:
        why = "no production maintenance model yet" if prod is None else "no ingested telemetry yet"
        return DriftVerdict(cohort.id, None, None, raw.digest if raw else None, None, reasons=[why], seconds=time.perf_counter() - t0)
    body, components = load_checkpoint(store, prod.artifact_sha256)
    trained_until = float(body["trained_until"])
    reference = Reference.from_bytes(store.get_bytes(body["reference_sha256"]))
    current = _current_telemetry(store, raw, cohort, after=trained_until)
    columns = detect_drift(reference, current, settings.policy)
    drifted = [c.column for c in columns if c.drifted]
    v = DriftVerdict(cohort.id, prod.version, trained_until, raw.digest, body["reference_sha256"], columns,
                     current_rows={k: int(np.isfinite(a).sum()) for k, a in current.items()})
    v.drifted = drifted
    if len(drifted) >= settings.min_drifted:
        v.reasons.append("drift in " + ", ".join(f"{c.column} (D={c.statistic:.2f})" for c in columns if c.drifted))
    v.accuracy = field_accuracy(home, cohort, components, trained_until, config, settings)
    if v.accuracy is not None and v.accuracy.degraded:
        v.reasons.append(f"field accuracy: MAE {v.accuracy.mae_mm:.2f} mm over {v.accuracy.measurements} new workshop measurements "
                         f"> {v.accuracy.threshold_mm:g} mm")
    v.retrain = bool(v.reasons) and (len(drifted) >= settings.min_drifted or (v.accuracy is not None and v.accuracy.degraded))
    if not v.reasons:
        n = max(v.current_rows.values(), default=0)
        v.reasons.append(f"no drift ({n} new samples per signal at most, {len(columns)} signals tested)")
    v.seconds = time.perf_counter() - t0
    return v


def evidently_report(home: HomeLayout, cohort: Cohort, verdict: DriftVerdict) -> str | None:
    """Evidently's data-drift HTML for the verdict's samples, stored content-addressed; its sha256 (None without new data)."""
    from avops.drift.report import evidently_html

    if not (verdict.reference_sha256 and verdict.raw_manifest and any(n > 0 for n in verdict.current_rows.values())):
        return None
    store = open_store(home)
    reference = Reference.from_bytes(store.get_bytes(verdict.reference_sha256))
    raw = datasets.Manifest(verdict.raw_manifest, store.get_json(verdict.raw_manifest))  # type: ignore[arg-type]
    current = _current_telemetry(store, raw, cohort, after=verdict.trained_until or float("-inf"))
    return store.put_bytes(evidently_html(reference, current, [d.name for d in DRIFT_SIGNALS]))
