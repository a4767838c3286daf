"""The battery stages as functions: embedding, feature tables, state-of-health models.

* ``fit_chemistry_embedding``: the PCA basis of incremental capacity curves of one chemistry,
  fitted offline over every fleet of that chemistry, stored by digest; the feature definition's
  version includes it, so a refit is a new feature version.
* ``build_feature_table``: one fleet's offline features (point in time) and labels.
* ``train_chemistry``: SoH and RUL models per chemistry on vehicle and stationary cells together,
  leave-one-cell-out evidence, gates per chemistry and temperature band, the generalisation
  comparison (vehicle cells only vs both fleets), registry transitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from avops import datasets
from avops.battery.config import BatteryConfig, ModelGate
from avops.battery.features import (BatteryFeatureSpec, Embedding, fit_embedding, offline_features, q_grids_offline,
                                    spec_for)
from avops.battery.ingest import ASSET_KEY as REFERENCE_TESTS, load_reference_tests
from avops.battery.model import TARGETS, LinearModel, evaluate_cells_out, fit_linear, generalization, labels, measured_capacity, upper_bound
from avops.home import HomeLayout
from avops.registry import ModelRegistry, ModelVersion
from avops.registry.gated import PRODUCTION, settle
from avops.store import ObjectStore, open_store

EMBEDDING_KEY = "features/battery_embedding"
FEATURES_KEY = "features/battery_cells"
EVALUATION_KEY = "battery/evaluation"
MODEL = "battery_soh"
BATTERY_VERSION = "1"


class NoBatteryData(LookupError):
    """Nothing to compute from yet (no fleet of the chemistry has ingested reference tests)."""


def _fleets_with_tests(home: HomeLayout, store: ObjectStore, config: BatteryConfig, chemistry: str) -> list[str]:
    return [f for f in config.fleets_of(chemistry) if datasets.current(store, home.refs, REFERENCE_TESTS, f) is not None]


def fit_chemistry_embedding(home: HomeLayout, config: BatteryConfig, chemistry: str) -> datasets.Manifest:
    store = open_store(home)
    fleets = _fleets_with_tests(home, store, config, chemistry)
    if not fleets:
        raise NoBatteryData(f"no fleet of chemistry {chemistry!r} has ingested reference tests ({REFERENCE_TESTS}); "
                            f"fleets of this chemistry: {', '.join(config.fleets_of(chemistry)) or 'none'}")
    spec = spec_for(config.chemistries[chemistry])
    grids, sources = [], {}
    for f in fleets:
        m, tests, samples = load_reference_tests(home, f, store)
        grids.append(q_grids_offline(tests, samples, spec))
        sources[f] = m.digest
    emb = fit_embedding(np.concatenate(grids), spec)
    digest = store.put_json({"mean": emb.mean, "components": emb.components, "chemistry": chemistry, "fitted_on": sources})
    table = pa.table({"component": [f"ic_pc{j + 1}" for j in range(len(emb.components))]})
    return datasets.publish(store, home.refs, EMBEDDING_KEY, chemistry, {"components": table},
                            {"embedding_sha256": digest, "embedding_digest": emb.digest, "fitted_on": sources,
                             "curves": int(sum(len(g) for g in grids)), "spec": spec_for(config.chemistries[chemistry], emb).canonical()})


def embedding_for(home: HomeLayout, chemistry: str, store: ObjectStore | None = None) -> tuple[datasets.Manifest, Embedding]:
    store = store or open_store(home)
    m = datasets.current(store, home.refs, EMBEDDING_KEY, chemistry)
    if m is None:
        raise NoBatteryData(f"{EMBEDDING_KEY}[{chemistry}] has not been materialized: fit the chemistry's embedding first")
    body = store.get_json(m.body["embedding_sha256"])
    return m, Embedding(tuple(body["mean"]), tuple(tuple(c) for c in body["components"]))  # type: ignore[index]


def feature_spec(home: HomeLayout, config: BatteryConfig, chemistry: str, store: ObjectStore | None = None) -> tuple[datasets.Manifest, BatteryFeatureSpec]:
    m, emb = embedding_for(home, chemistry, store)
    return m, spec_for(config.chemistries[chemistry], emb)


def build_feature_table(home: HomeLayout, config: BatteryConfig, fleet: str) -> datasets.Manifest:
    store = open_store(home)
    chem = config.chemistry_of(fleet)
    raw, tests, samples = load_reference_tests(home, fleet, store)
    em, spec = feature_spec(home, config, chem.name, store)
    feats = offline_features(tests, samples, spec)
    lab = labels(feats.to_pandas(), measured_capacity(tests, samples), chem.rated_capacity_ah, config.model.end_of_life_soh)
    return datasets.publish(store, home.refs, FEATURES_KEY, fleet,
                            {"features": feats, "labels": pa.Table.from_pandas(lab, preserve_index=False)},
                            {"raw_manifest": raw.digest, "embedding_manifest": em.digest, "embedding_digest": spec.embedding.digest,  # type: ignore[union-attr]
                             "feature_version": spec.version, "spec": spec.canonical(), "chemistry": chem.name,
                             "code_version": BATTERY_VERSION})


def load_feature_table(home: HomeLayout, fleet: str, store: ObjectStore | None = None) -> tuple[datasets.Manifest, pd.DataFrame, pd.DataFrame]:
    store = store or open_store(home)
    m = datasets.current(store, home.refs, FEATURES_KEY, fleet)
    if m is None:
        raise NoBatteryData(f"{FEATURES_KEY}[{fleet}] has not been materialized")
    return m, datasets.read_table(store, m, "features").to_pandas(), datasets.read_table(store, m, "labels").to_pandas()


def judge(gate: ModelGate, per_cell: pd.DataFrame, chemistry: str, band: str) -> dict:
    vals = per_cell[(per_cell["target"] == gate.target) & (per_cell["band"] == band)]["mae"].to_numpy()
    value = upper_bound(vals)
    name = f"{chemistry}.{band}.{gate.name}"
    if len(vals) < gate.min_cells or not math.isfinite(value):
        status, blocks = "insufficient", gate.on_insufficient == "block"
        reason = f"{len(vals)} held-out cells < {gate.min_cells} required ({gate.on_insufficient})"
    else:
        ok = value <= gate.threshold
        status, blocks = ("passed", False) if ok else ("failed", True)
        reason = f"{value:.4g} {'meets' if ok else 'misses'} {gate.threshold:g}"
    return {"gate": name, "chemistry": chemistry, "band": band, "target": gate.target, "value": value if math.isfinite(value) else None,
            "threshold": gate.threshold, "samples": int(len(vals)), "min_samples": gate.min_cells, "status": status, "blocks": blocks,
            "reason": reason, "mean_cell_mae": float(np.mean(vals)) if len(vals) else None}


@dataclass
class BatteryModelResult:
    version: ModelVersion
    checkpoint_sha256: str
    evidence_sha256: str
    gates: list[dict]
    blocked: bool
    generalization: pd.DataFrame
    per_cell: pd.DataFrame
    evaluation: datasets.Manifest
    cells: int
    tests: int
    censored_cells: int


def load_checkpoint(store: ObjectStore, digest: str) -> tuple[dict, dict[str, LinearModel]]:
    body = store.get_json(digest)
    return body, {t: LinearModel(**m) for t, m in body["models"].items()}  # type: ignore[index]


def production(registry: ModelRegistry, chemistry: str) -> ModelVersion | None:
    return registry.resolve_alias(MODEL, chemistry, PRODUCTION)


def training_rows(home: HomeLayout, config: BatteryConfig, chemistry: str, store: ObjectStore) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    X, Y, manifests = [], [], {}
    for fleet in config.fleets_of(chemistry):
        if datasets.current(store, home.refs, FEATURES_KEY, fleet) is None:
            continue
        m, x, y = load_feature_table(home, fleet, store)
        X.append(x)
        Y.append(y)
        manifests[fleet] = {"manifest": m.digest, "feature_version": m.body["feature_version"]}
    if not X:
        raise NoBatteryData(f"no {FEATURES_KEY} table of chemistry {chemistry!r} yet")
    versions = {v["feature_version"] for v in manifests.values()}
    if len(versions) > 1:
        raise ValueError(f"{chemistry}: the fleets' feature tables were computed with different feature versions {sorted(versions)} "
                         f"(a refitted embedding?): rebuild {FEATURES_KEY} for {', '.join(manifests)} first")
    return pd.concat(X, ignore_index=True), pd.concat(Y, ignore_index=True), manifests


def train_chemistry(home: HomeLayout, registry: ModelRegistry, config: BatteryConfig, chemistry: str, actor: str,
                    run_id: str | None = None) -> BatteryModelResult:
    store = open_store(home)
    settings = config.model
    X, Y, manifests = training_rows(home, config, chemistry, store)
    kinds = {f: config.fleet(f).kind for f in manifests}
    feats = list(settings.features)
    ev = evaluate_cells_out(X, Y, feats, settings.ridge_alpha, kinds, settings.bands)
    bands = sorted(ev.per_cell["band"].unique())
    gates = [judge(g, ev.per_cell, chemistry, b) for b in bands for g in settings.gates]
    gen = generalization(ev.predictions)
    data = X.merge(Y[["test_id", *TARGETS]], on="test_id")
    models = {}
    for target in TARGETS:
        ok = data[target].notna()
        if ok.sum() < 3:
            raise ValueError(f"{chemistry}: only {int(ok.sum())} tests have a {target} label; the model needs cells that reached end of life")
        models[target] = fit_linear(data[ok], data.loc[ok, target].to_numpy(), feats, target, settings.ridge_alpha, standardise_on=data)
    censored = int(Y.groupby("cell_id")["rul_cycles"].apply(lambda s: s.isna().all()).sum())
    from avops.battery.drift import AgingReference  # the drift monitor's reference: how these cells aged

    aging = AgingReference.fit(X, chemistry, sources={"feature_tables": manifests})
    aging_sha = store.put_json(aging.to_dict())
    checkpoint = {"model": MODEL, "format": "avops-battery-soh/1", "chemistry": chemistry, "feature_tables": manifests,
                  "feature_version": next(iter(manifests.values()))["feature_version"], "features": feats,
                  "models": {t: m.to_dict() for t, m in models.items()}, "end_of_life_soh": settings.end_of_life_soh,
                  "aging_reference_sha256": aging_sha, "trained_until": aging.trained_until,
                  "config": config.path, "code_version": BATTERY_VERSION}
    ckpt_sha = store.put_json(checkpoint)
    blocked = any(g["blocks"] for g in gates)
    evidence = {"chemistry": chemistry, "checkpoint_sha256": ckpt_sha, "method": "leave-one-cell-out",
                "cells": int(X["cell_id"].nunique()), "tests": int(len(X)), "censored_cells": censored, "gates": gates,
                "generalization": gen.to_dict(orient="records"), "blocked": blocked}
    evidence_sha = store.put_json(_finite(evidence))
    lineage = {"feature_tables": {f: v["manifest"] for f, v in manifests.items()}, "evidence_sha256": evidence_sha,
               "aging_reference_sha256": aging_sha}
    metrics = {f"{r['target']}.{r['trained_on']}.{r['evaluated_on'].replace(' ', '_')}.mae": r["mae"] for r in gen.to_dict(orient="records")}
    metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    version = registry.register(MODEL, chemistry, ckpt_sha, lineage, metrics, actor, "battery SoH/RUL model trained", run_id)
    evaluation = datasets.publish(store, home.refs, EVALUATION_KEY, chemistry,
                                  {"predictions": pa.Table.from_pandas(ev.predictions, preserve_index=False),
                                   "per_cell": pa.Table.from_pandas(ev.per_cell, preserve_index=False),
                                   "generalization": pa.Table.from_pandas(gen, preserve_index=False)},
                                  {"evidence_sha256": evidence_sha, "version": version.version, "checkpoint_sha256": ckpt_sha})
    version = settle(registry, version, gates, evidence_sha, "battery gates",
                     "battery SoH model runs on the BMS: released when its gates pass", actor, run_id, {"chemistry": chemistry})
    return BatteryModelResult(version, ckpt_sha, evidence_sha, gates, blocked, gen, ev.per_cell, evaluation,
                              int(X["cell_id"].nunique()), int(len(X)), censored)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


@dataclass
class BatteryParity:
    passed: bool
    compared: int
    max_rel_diff: float
    mismatches: list[dict]


def verify_parity(home: HomeLayout, config: BatteryConfig, fleet: str, rel_tol: float = 1e-8) -> BatteryParity:
    """Every test of the fleet recomputed online, cell by cell in time order as its BMS would (keeping only
    its small state), against the offline table: |online - offline| <= rel_tol * max(|offline|, 1) (the
    floor: embedding coordinates near zero are differences of large projections)."""
    from avops.battery.features import FEATURE_NAMES, CellState, online_features

    store = open_store(home)
    m, table, _ = load_feature_table(home, fleet, store)
    raw = datasets.Manifest(m.body["raw_manifest"], store.get_json(m.body["raw_manifest"]))  # type: ignore[arg-type]
    samples = datasets.read_table(store, raw, "samples").to_pandas()
    _, spec = feature_spec(home, config, m.body["chemistry"], store)
    if spec.version != m.body["feature_version"]:
        return BatteryParity(False, 0, float("inf"), [{"problem": f"the table was computed with feature version {m.body['feature_version']}, "
                                                                  f"the current definition is {spec.version}: rebuild {FEATURES_KEY}[{fleet}]"}])
    by_test = {k: g.sort_values("time_s") for k, g in samples.groupby("test_id")}
    states: dict[str, CellState] = {}
    worst, compared, bad = 0.0, 0, []
    for row in table.sort_values(["cell_id", "started_at"]).itertuples():
        d = by_test[row.test_id]
        on = online_features(d.time_s.to_numpy(), d.current_a.to_numpy(), d.voltage_v.to_numpy(), d.temperature_c.to_numpy(),
                             d.step.to_numpy(), row.usage_cycles, states.setdefault(row.cell_id, CellState()), spec)
        for name in FEATURE_NAMES:
            a, b = on[name], getattr(row, name)
            compared += 1
            if math.isnan(a) and math.isnan(b):
                continue
            rel = abs(a - b) / max(abs(b), 1.0)
            worst = max(worst, rel if math.isfinite(rel) else float("inf"))
            if not rel <= rel_tol:
                bad.append({"test_id": row.test_id, "feature": name, "online": a, "offline": b})
    return BatteryParity(not bad, compared, worst, bad)


def fleet_drift(home: HomeLayout, registry: ModelRegistry, config: BatteryConfig, fleet: str):
    """The fleet's reference tests since its chemistry's production model was trained, against the aging
    that model's cells went through (``avops.battery.drift``); None when there is no production model yet."""
    from avops.battery.drift import AgingReference, evaluate_fleet

    store = open_store(home)
    chem = config.fleet(fleet).chemistry
    version = production(registry, chem)
    if version is None:
        return None
    body = store.get_json(version.artifact_sha256)
    reference = AgingReference.from_dict(store.get_json(body["aging_reference_sha256"]))  # type: ignore[index, arg-type]
    from avops.drift.ks import DriftPolicy

    _, rows, _ = load_feature_table(home, fleet, store)
    d = config.drift
    policy = DriftPolicy(alpha=d.alpha, min_effect=d.min_effect, min_samples=d.min_samples)
    return version, evaluate_fleet(reference, rows, policy, min_cells=d.min_cells, new_only=True)
