"""Train, judge and register the predictive maintenance model of one cohort.

One call does what the perception stages do in several, because the model is small: labels
from the workshop export as known at the data's cut-off time, leave-one-vehicle-out evidence
per component, gates per component (``config/maintenance.yaml``), the final fit, the drift
reference (the telemetry it was trained on, sorted once), and the registry transitions. A
model that passes its gates becomes the cohort's ``production`` maintenance model: it runs
in the fleet backend on incoming feature rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from avops import datasets
from avops.drift.ks import Reference
from avops.drift.telemetry import telemetry_rows
from avops.features.definitions import DRIFT_SIGNALS
from avops.features.tables import FEATURES_KEY, load_feature_table, platform_for
from avops.fleet_registry import Cohort
from avops.home import HomeLayout
from avops.maintenance.config import MaintenanceConfig
from avops.maintenance.model import ComponentModel, evaluate_lovo, fit, judge, label_rows, wear_rate
from avops.maintenance.service import known_at, load_service_orders
from avops.query import connect_manifest
from avops.registry import ModelRegistry, ModelVersion
from avops.registry.gated import PRODUCTION, settle
from avops.store import ObjectStore, open_store

MODEL = "maintenance"
MAINTENANCE_VERSION = "1"
EVALUATION_KEY = "maintenance/evaluation"


@dataclass
class MaintenanceResult:
    version: ModelVersion
    checkpoint_sha256: str
    evidence_sha256: str
    reference_sha256: str
    gates: list[dict]
    blocked: bool
    trained_until: float
    rows: int
    labelled: int
    evaluation: datasets.Manifest
    rejected_orders: list[dict]


def load_checkpoint(store: ObjectStore, digest: str) -> tuple[dict, dict[str, ComponentModel]]:
    body = store.get_json(digest)
    return body, {name: ComponentModel(**c) for name, c in body["components"].items()}  # type: ignore[index]


def production(registry: ModelRegistry, cohort: str) -> ModelVersion | None:
    return registry.resolve_alias(MODEL, cohort, PRODUCTION)


def train(home: HomeLayout, registry: ModelRegistry, cohort: Cohort, config: MaintenanceConfig, actor: str,
          run_id: str | None = None) -> MaintenanceResult:
    store = open_store(home)
    fm, table = load_feature_table(home, cohort.id)
    X = table.to_pandas()
    if X.empty:
        raise ValueError(f"{FEATURES_KEY}[{cohort.id}] has no rows; ingest drives first")
    cutoff = float(X["as_of"].max())  # the data's "now": nothing recorded later may label it
    records = load_service_orders(home, cohort.id, set(cohort.vehicle_ids()))
    orders = known_at(records.orders, pd.Timestamp(cutoff, unit="s", tz="UTC"))

    components, gates, evals, tables = {}, [], {}, {}
    for spec in config.components:
        labels = label_rows(X, orders, spec, config.horizon_days)
        rate = wear_rate(orders, spec.name)
        ev = evaluate_lovo(X, labels, spec, rate, config.horizon_days)
        ok = labels["target_mm"].notna()
        if ok.sum() < 2:
            raise ValueError(f"{cohort.id}: only {int(ok.sum())} drives have a {spec.name} measurement within "
                             f"{spec.label_max_gap_days:g} days; the model needs workshop records to learn from")
        components[spec.name] = fit(X[ok], labels.loc[ok, "target_mm"].to_numpy(), spec, rate, config.horizon_days)
        gates += [judge(ev, g) for g in spec.gates]
        evals[spec.name] = {"n": ev.n, "mae_mm": ev.mae, "mae_upper_mm": ev.mae_upper, "baseline_mae_mm": ev.baseline_mae,
                            "skill": ev.skill, "positives": ev.positives, "flagged_positives": ev.flagged_positives,
                            "recall": ev.recall, "recall_lower": ev.recall_lower, "wear_rate_mm_per_day": rate}
        tables[f"{spec.name}_predictions"] = ev.predictions

    raw = datasets.Manifest(fm.body["raw_manifest"], store.get_json(fm.body["raw_manifest"]))  # type: ignore[arg-type]
    con = connect_manifest(store, raw)
    try:
        reference = Reference.build(telemetry_rows(con, platform_for(cohort), DRIFT_SIGNALS, until=cutoff),
                                    meta={"cohort": cohort.id, "until": cutoff, "raw_manifest": raw.digest})
    finally:
        con.close()
    reference_sha = store.put_bytes(reference.to_bytes())
    checkpoint = {"model": MODEL, "format": "avops-maintenance/1", "cohort": cohort.id, "trained_until": cutoff,
                  "components": {n: c.to_dict() for n, c in components.items()}, "feature_manifest": fm.digest,
                  "feature_versions": fm.body["feature_versions"], "service_orders_sha256": records.sha256,
                  "reference_sha256": reference_sha, "config": config.path, "code_version": MAINTENANCE_VERSION}
    ckpt_sha = store.put_json(checkpoint)
    blocked = any(g["blocks"] for g in gates)
    evidence = {"cohort": cohort.id, "checkpoint_sha256": ckpt_sha, "method": "leave-one-vehicle-out", "components": evals,
                "gates": gates, "blocked": blocked, "labels_known_at": cutoff, "service_orders_sha256": records.sha256,
                "rejected_orders": len(records.rejected)}
    evidence_sha = store.put_json(evidence)
    lineage = {"feature_manifest": fm.digest, "raw_manifest": raw.digest, "service_orders_sha256": records.sha256,
               "reference_sha256": reference_sha, "evidence_sha256": evidence_sha}
    metrics = {f"{n}.{k}": (None if isinstance(v, float) and not math.isfinite(v) else v) for n, e in evals.items() for k, v in e.items()}
    version = registry.register(MODEL, cohort.id, ckpt_sha, lineage, metrics, actor, "maintenance model trained", run_id)
    eval_manifest = datasets.publish(store, home.refs, EVALUATION_KEY, cohort.id,
                                     {n: _arrow(t) for n, t in tables.items()},
                                     {"evidence_sha256": evidence_sha, "version": version.version, "checkpoint_sha256": ckpt_sha})
    version = settle(registry, version, gates, evidence_sha, "maintenance gates",
                     "maintenance model runs in the fleet backend: released when its gates pass", actor, run_id, {"cohort": cohort.id})
    return MaintenanceResult(version, ckpt_sha, evidence_sha, reference_sha, gates, blocked, cutoff, len(X),
                             int(sum(e["n"] for e in evals.values())), eval_manifest, records.rejected)


def _arrow(df: pd.DataFrame):
    import pyarrow as pa

    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].astype(str)
    return pa.Table.from_pandas(out, preserve_index=False)
