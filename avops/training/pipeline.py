"""Training stages as plain functions: train, evaluate and gate, validate, shadow, grow the incident library.

The Dagster assets in ``avops_assets/defs/training`` only call these; everything here works
on an avops home, a dataset repository and a model registry, so it runs (and is tested)
without Dagster.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from avops import datasets
from avops.curation.ontology import Ontology, load_ontology
from avops.curation.reviews import collect_returns
from avops.home import HomeLayout
from avops.audit import log as audit
from avops.registry import ModelRegistry, ModelVersion
from avops.store import ObjectStore, sha256_file, open_store
from avops.training import incidents as inc_lib
from avops.training.checkpoints import Checkpoint, TrainConfig, load_checkpoint, train_checkpoint
from avops.training.data import load_images, load_training_set
from avops.training.evaluation import Evaluation, evaluate_on, judge, per_class_recall, predict
from avops.training.gates import GatePolicy, GateResult
from avops.training.shadow import shadow_compare
from avops.versioning.base import DatasetRepository

MODEL = "perception"
CHECKPOINTS = "training/checkpoints"
EVALUATION = "training/evaluation"
SHADOW = "training/shadow"
TRAINING_VERSION = "1"  # bump when training or evaluation semantics change (Dagster code_version)
PRODUCTION = "production"


def _store(home: HomeLayout) -> ObjectStore:
    return open_store(home)


# ---------------------------------------------------------------- checkpoints
@dataclass
class TrainResult:
    checkpoint: Checkpoint
    version: ModelVersion
    dataset_commit: str
    train_frames: int
    seconds: float


def train(home: HomeLayout, repo: DatasetRepository, registry: ModelRegistry, cohort: str, dataset_ref: str, config: TrainConfig,
          actor: str, run_id: str | None = None, code: dict | None = None, ontology: Ontology | None = None,
          progress: Callable[[int, int, float], None] | None = None, exclude: dict | None = None) -> TrainResult:
    """Train a checkpoint on the curated set at ``dataset_ref`` and register it as a candidate.

    ``exclude`` drops train-split frames matching an ODD filter (ablations and planted-fault tests);
    it is recorded in the lineage so such a model can never pass for a clean one.
    """
    ontology = ontology or load_ontology()
    data = load_training_set(repo, dataset_ref, cohort)
    if exclude:
        data = data.without(exclude)
    t0 = time.perf_counter()
    ck = train_checkpoint(_store(home), data, tuple(ontology.classes), config, code=code, progress=progress)
    seconds = time.perf_counter() - t0
    lineage = {"dataset_commit": data.commit_id, "dataset_manifest_sha256": data.manifest_sha256,
               "provenance_sha256": ck.provenance_digest, "code": ck.provenance["code"], "train_frames": len(data.split("train")),
               "excluded": exclude or {}}
    curve = ck.model.training_curve
    version = registry.register(MODEL, cohort, ck.digest, lineage, {"final_train_loss": curve[-1]["loss"] if curve else None},
                                actor, f"trained on dataset commit {data.commit_id[:12]}", run_id)
    return TrainResult(ck, version, data.commit_id, len(data.split("train")), seconds)


# ---------------------------------------------------------------- evaluation and gates
@dataclass
class GateReport:
    cohort: str
    candidate: ModelVersion
    production: ModelVersion | None
    gates: list[GateResult]
    candidate_eval: Evaluation
    production_eval: Evaluation | None
    replay: pd.DataFrame
    production_replay: pd.DataFrame | None
    regressions: list[str]
    evidence_sha256: str
    manifest: datasets.Manifest
    blocked: bool

    @property
    def blocking(self) -> list[GateResult]:
        return [g for g in self.gates if g.blocks]


def production_version(registry: ModelRegistry, cohort: str) -> ModelVersion | None:
    return registry.resolve_alias(MODEL, cohort, PRODUCTION)


def evaluate(home: HomeLayout, repo: DatasetRepository, registry: ModelRegistry, cohort: str, version: int, policy: GatePolicy,
             actor: str, run_id: str | None = None) -> GateReport:
    """Evaluate the candidate (and production, on the same test frames), judge the gates, replay every incident.

    The verdict and its evidence are stored content-addressed; a blocked candidate is moved to
    ``blocked`` in the registry with the failing gates as the reason.
    """
    store = _store(home)
    cand = registry.get(MODEL, version)
    if cand.cohort != cohort:
        raise ValueError(f"{MODEL} v{version} belongs to cohort {cand.cohort}, not {cohort}")
    data = load_training_set(repo, cand.lineage["dataset_commit"], cohort)
    model = load_checkpoint(store, cand.artifact_sha256)
    test_images = load_images(store, list(data.split("test")["object_sha256"]))  # decoded once for both models
    cand_eval = evaluate_on(model, store, data, policy, images=test_images)
    prod = production_version(registry, cohort)
    if prod is not None and prod.artifact_sha256 == cand.artifact_sha256:
        prod = None  # the candidate is what is in production: nothing to compare against
    prod_model = load_checkpoint(store, prod.artifact_sha256) if prod else None
    prod_eval = evaluate_on(prod_model, store, data, policy, images=test_images) if prod_model else None
    gates = judge(policy, cand_eval, prod_eval)
    library = inc_lib.load_library(home)
    replay = inc_lib.replay(model, store, library)
    prod_replay = inc_lib.replay(prod_model, store, library) if prod_model else None
    regressions = inc_lib.regressions(replay, prod_replay)
    blocked = any(g.blocks for g in gates) or bool(regressions)
    evidence = {
        "format": "avops-gate-evidence/1",
        "cohort": cohort,
        "candidate": {"model": MODEL, "version": cand.version, "sha256": cand.artifact_sha256},
        "production": {"model": MODEL, "version": prod.version, "sha256": prod.artifact_sha256} if prod else None,
        "dataset_commit": data.commit_id,
        "test_frames": len(cand_eval.frames),
        "policy": {"path": policy.path, "sha256": sha256_file(policy.path), "bound": policy.bound, "confidence": policy.confidence,
                   "iou": policy.iou},
        "gates": [g.to_dict() for g in gates],
        "slices": _records(cand_eval.slices),
        "production_slices": _records(prod_eval.slices) if prod_eval else None,
        "recall_by_class": per_class_recall(cand_eval),
        "incident_library_sha256": inc_lib.library_digest(library),
        "incidents": _records(replay),
        "production_incidents": _records(prod_replay) if prod_replay is not None else None,
        "incident_regressions": regressions,
        "blocked": blocked,
    }
    digest = store.put_json(evidence)
    gate_table = pd.DataFrame([g.to_dict() for g in gates])
    m = datasets.publish(store, home.refs, EVALUATION, cohort,
                         {"slices": pa.Table.from_pandas(cand_eval.slices, preserve_index=False),
                          "gates": pa.Table.from_pandas(gate_table, preserve_index=False),
                          "incidents": pa.Table.from_pandas(replay, preserve_index=False)},
                         {"evidence_sha256": digest, "candidate_version": cand.version, "candidate_sha256": cand.artifact_sha256,
                          "dataset_commit": data.commit_id, "blocked": blocked})
    audit.record(registry, audit.GATE_RESULT, f"{MODEL}/v{cand.version}",
                 {"cohort": cohort, "evidence_sha256": digest, "dataset_commit": data.commit_id, "blocked": blocked,
                  "policy_sha256": evidence["policy"]["sha256"], "incident_regressions": regressions,
                  "gates": [{"gate": g["gate"], "status": g["status"], "blocks": g["blocks"], "lower_bound": g["lower_bound"],
                             "threshold": g["threshold"]} for g in evidence["gates"]]}, actor, run_id)
    if blocked and cand.stage == "candidate":
        why = [f"{g.gate}: {g.reason}" for g in gates if g.blocks] + [f"incident {i} regressed" for i in regressions]
        registry.transition(MODEL, cand.version, "blocked", actor, f"safety gates failed ({'; '.join(why)}); evidence sha256:{digest}", run_id)
    return GateReport(cohort, cand, prod, gates, cand_eval, prod_eval, replay, prod_replay, regressions, digest, m, blocked)


def _records(df: pd.DataFrame | None) -> list[dict]:
    if df is None:
        return []
    return [{k: (None if isinstance(v, float) and math.isnan(v) else (v.item() if isinstance(v, np.generic) else v)) for k, v in r.items()}
            for r in df.to_dict("records")]


def current_evaluation(home: HomeLayout, cohort: str) -> tuple[datasets.Manifest, dict]:
    store = _store(home)
    m = datasets.current(store, home.refs, EVALUATION, cohort)
    if m is None:
        raise LookupError(f"no evaluation of {cohort} yet: materialize training/evaluation first")
    return m, store.get_json(m.body["evidence_sha256"])


def validate(registry: ModelRegistry, version: int, evidence_sha256: str, actor: str, run_id: str | None = None) -> ModelVersion:
    """Candidate -> validated, once every blocking gate passed (idempotent)."""
    v = registry.get(MODEL, version)
    if v.stage in ("validated", "released"):
        return v
    return registry.transition(MODEL, version, "validated", actor, f"all safety gates and incident replays passed; evidence sha256:{evidence_sha256}",
                               run_id)


def release(registry: ModelRegistry, cohort: str, version: int, actor: str, reason: str, run_id: str | None = None) -> ModelVersion:
    """Validated -> released, and point the cohort's ``production`` alias at it."""
    v = registry.get(MODEL, version)
    if v.stage == "validated":
        v = registry.transition(MODEL, version, "released", actor, reason, run_id)
    registry.set_alias(MODEL, cohort, PRODUCTION, version, actor, reason, run_id)
    return v


# ---------------------------------------------------------------- shadow mode
@dataclass
class ShadowResult:
    production: ModelVersion | None
    frames: pd.DataFrame  # per frame: shadow_disagreement, disagrees
    rates: pd.DataFrame  # per slice
    manifest: datasets.Manifest | None


def shadow(home: HomeLayout, registry: ModelRegistry, cohort: str, version: int, slices: list, recent_drives: int = 8,
           threshold: float = 0.5) -> ShadowResult:
    """Run the candidate beside production on the cohort's most recent fleet drives (no labels needed)."""
    from avops.curation.pipeline import load_frames

    store = _store(home)
    cand = registry.get(MODEL, version)
    prod = production_version(registry, cohort)
    if prod is None or prod.artifact_sha256 == cand.artifact_sha256:
        return ShadowResult(prod, pd.DataFrame(), pd.DataFrame(), None)
    frames, source = load_frames(home, cohort)
    latest = frames.groupby("drive_id")["timestamp"].max().sort_values(ascending=False).head(recent_drives).index
    frames = frames[frames["drive_id"].isin(latest)].reset_index(drop=True)
    digests = list(frames["object_sha256"])
    c_dets = predict(load_checkpoint(store, cand.artifact_sha256), store, digests)
    p_dets = predict(load_checkpoint(store, prod.artifact_sha256), store, digests)
    out, rates = shadow_compare(frames, c_dets, p_dets, slices, threshold)
    keep = ["drive_id", "vehicle_id", "frame_index", "timestamp", "object_sha256", "illumination", "weather", "road_type",
            "roadworks", "shadow_disagreement", "disagrees"]
    out = out[[c for c in keep if c in out]]
    m = datasets.publish(store, home.refs, SHADOW, cohort,
                         {"frames": pa.Table.from_pandas(out, preserve_index=False), "rates": pa.Table.from_pandas(rates, preserve_index=False)},
                         {"candidate_version": cand.version, "production_version": prod.version, "source_manifest": source,
                          "threshold": threshold, "recent_drives": list(latest)})
    return ShadowResult(prod, out, rates, m)


def shadow_signal(home: HomeLayout, cohort: str) -> pd.DataFrame | None:
    """Per-frame shadow disagreement from the latest shadow run, for the data engine's selection."""
    store = _store(home)
    m = datasets.current(store, home.refs, SHADOW, cohort)
    if m is None:
        return None
    return datasets.read_table(store, m, "frames").to_pandas()[["drive_id", "frame_index", "shadow_disagreement"]]


# ---------------------------------------------------------------- incidents
def harvest_incidents(home: HomeLayout, cohort: str, ontology: Ontology | None = None) -> tuple[list[inc_lib.Incident], int]:
    """Review cases marked as incidents become library entries; returns (new incidents, library size)."""
    from avops.curation.pipeline import load_frames

    ontology = ontology or load_ontology()
    store = _store(home)
    frames, _ = load_frames(home, cohort)
    by_key = frames.set_index(["drive_id", "frame_index"])
    returns = collect_returns(home, cohort, set(by_key.index), ontology)
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for (drive_id, frame_index), (description, reporter) in sorted(returns.incidents.items()):
        groups.setdefault((drive_id, description), []).append((frame_index, reporter))
    labels = returns.labels
    new = []
    for (drive_id, description), members in groups.items():
        idx = sorted(i for i, _ in members)
        rows = []
        for i in idx:
            lab = labels[(labels["drive_id"] == drive_id) & (labels["frame_index"] == i)].dropna(subset=["cls"])
            r = by_key.loc[(drive_id, i)]
            rows.append(inc_lib.IncidentFrame(int(i), float(r["timestamp"]), str(r["object_sha256"]),
                                              lab[["x0", "y0", "x1", "y1"]].to_numpy(float).tolist(), list(lab["cls"])))
        first = by_key.loc[(drive_id, idx[0])]
        odd = {c: (bool(first[c]) if c == "roadworks" else str(first[c])) for c in ("illumination", "weather", "road_type", "roadworks")}
        crit = sorted({c for f in rows for c in f.classes if c in ontology.vru_classes}) or sorted({c for f in rows for c in f.classes})
        h, w = load_images(store, [rows[0].image_sha256]).shape[1:3]
        inc = inc_lib.Incident(inc_lib.incident_id(drive_id, idx), cohort, drive_id, description, odd, crit, rows,
                               {"reported_by": members[0][1], "via": "review queue"}, image_size=(h, w))
        added, is_new = inc_lib.add_incident(home, store, inc)
        if is_new:
            new.append(added)
    return new, len(inc_lib.load_library(home))
