"""The data-engine stages as plain functions: teacher, auto-labels, review queue, curated set, campaign.

Each stage reads published tables (``avops.datasets``) and the object store, and
returns what it wrote with digests, so the Dagster assets stay thin and every stage
can run (and be tested) without Dagster.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from avops import datasets
from avops.curation import openlabel
from avops.curation.campaigns import Campaign, plan_campaign
from avops.curation.detector import Teacher, TeacherConfig, evaluate, prior_box_baseline, train_teacher
from avops.curation.ontology import Ontology, load_ontology
from avops.curation.policy import CurationPolicy, coverage
from avops.curation.reviews import collect_returns, export_task
from avops.curation.selection import SelectionConfig, select_frames
from avops.curation.splits import assign_splits, shared_drives
from avops.home import HomeLayout
from avops.ingest.ingest import ASSET_KEY as RAW_DRIVES
from avops.store import ObjectStore, atomic_write_json, parquet_bytes, sha256_bytes, open_store
from avops.versioning.base import DatasetRepository

TEACHER = "curation/teacher"
AUTO_LABELS = "curation/auto_labels"
REVIEW_QUEUE = "curation/review_queue"
CURATED_SETS = "curation/curated_sets"
CURATION_VERSION = "1"
ODD = ["illumination", "weather", "road_type", "roadworks"]


class ReviewPending(RuntimeError):
    """Seed labels are still with the reviewers; the stage can be rerun when they return."""


def _store(home: HomeLayout) -> ObjectStore:
    return open_store(home)


def _manifest(home: HomeLayout, key: str, cohort: str) -> datasets.Manifest:
    m = datasets.current(_store(home), home.refs, key, cohort)
    if m is None:
        raise LookupError(f"no published {key} for cohort {cohort}: materialize it first")
    return m


def load_frames(home: HomeLayout, cohort: str) -> tuple[pd.DataFrame, str]:
    """The cohort's camera frames (from ingest) and the ingest manifest digest they came from."""
    m = _manifest(home, RAW_DRIVES, cohort)
    if "camera_frames" not in m.tables:
        raise LookupError(f"cohort {cohort} has no camera frames yet (only CAN-only logs ingested)")
    df = datasets.read_table(_store(home), m, "camera_frames").to_pandas()
    return df.sort_values(["drive_id", "frame_index"]).reset_index(drop=True), m.digest


def load_images(store: ObjectStore, digests: list[str]) -> np.ndarray:
    """Decode frames (PNG/JPEG) from the object store, verifying each digest."""
    if not digests:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack([np.asarray(Image.open(io.BytesIO(store.get_bytes(d, verify=True))).convert("RGB")) for d in digests])


def targets_for(labels: pd.DataFrame, keys: list[tuple[str, int]]) -> list[dict]:
    """Boxes and classes per (drive_id, frame_index); a frame without labels (or only an empty-frame marker) has none."""
    grouped = {k: g for k, g in labels.groupby(["drive_id", "frame_index"])} if len(labels) else {}
    out = []
    for k in keys:
        g = grouped.get(k)
        if g is None or g["cls"].isna().all():
            out.append({"boxes": np.zeros((0, 4), np.float32), "classes": []})
        else:
            g = g.dropna(subset=["cls"])
            out.append({"boxes": g[["x0", "y0", "x1", "y1"]].to_numpy(np.float32).reshape(-1, 4), "classes": list(g["cls"])})
    return out


# ---------------------------------------------------------------- teacher
@dataclass
class TeacherResult:
    digest: str
    reused: bool
    seed_frames: int
    train_frames: int
    heldout_metrics: dict
    baseline_metrics: dict
    training_curve: list[dict]
    config: dict
    source_manifest: str


def build_teacher(home: HomeLayout, cohort: str, policy: CurationPolicy, process_reviews: Callable[[], None],
                  ontology: Ontology | None = None, seed: int = 0) -> TeacherResult:
    """Seed set -> reviewers -> teacher ensemble, measured against a prior-box baseline on held-out seed frames."""
    ontology = ontology or load_ontology()
    frames, source = load_frames(home, cohort)
    tcfg = policy.teacher
    n_seed = min(int(tcfg["seed_frames"]), len(frames))
    # stratify by ODD so that night/fog frames are in the seed set at all
    strata = frames.groupby(["illumination", "weather"], group_keys=False)
    per = max(1, n_seed // max(1, strata.ngroups))
    seed_df = pd.concat([g.sample(n=min(len(g), per), random_state=seed) for _, g in strata])
    rest = frames.drop(seed_df.index)
    if len(seed_df) < n_seed and len(rest):
        seed_df = pd.concat([seed_df, rest.sample(n=min(len(rest), n_seed - len(seed_df)), random_state=seed)])
    seed_df = seed_df.sort_values(["drive_id", "frame_index"])
    for (drive_id, vehicle_id), g in seed_df.groupby(["drive_id", "vehicle_id"]):
        export_task(home, cohort, drive_id, vehicle_id, "seed", [
            openlabel.FrameLabel(int(r.frame_index), float(r.timestamp), r.object_sha256, {c: r[c] for c in ODD}, [])
            for _, r in g.iterrows()], label_version="seed")
    process_reviews()
    known = set(zip(frames["drive_id"], frames["frame_index"].astype(int)))
    returns = collect_returns(home, cohort, known, ontology)
    keys = [k for k in zip(seed_df["drive_id"], seed_df["frame_index"].astype(int)) if k in returns.reviewed_frames]
    if len(keys) < max(8, n_seed // 2):
        raise ReviewPending(f"{len(keys)} of {n_seed} seed frames of {cohort} are reviewed; the teacher needs at least half. "
                            f"Reviewers answer tasks in {home.root / 'review' / 'tasks' / cohort}; rerun when they returned.")
    cfg = TeacherConfig(members=int(tcfg["members"]), epochs=int(tcfg["epochs"]), width=int(tcfg["width"]), seed=seed)
    key_df = pd.DataFrame(keys, columns=["drive_id", "frame_index"]).merge(frames, on=["drive_id", "frame_index"])
    n_held = min(int(tcfg["heldout_frames"]), len(key_df) // 4)
    held_drive_order = sorted(key_df["drive_id"].unique(), key=lambda d: sha256_bytes(d.encode()))
    # hold out whole drives, so the baseline comparison is not flattered by near-duplicate frames
    held = []
    for d in held_drive_order:
        if len(held) >= n_held:
            break
        held += key_df.index[key_df["drive_id"] == d].tolist()
    train_df, held_df = key_df.drop(held), key_df.loc[held]
    labels = returns.labels
    train_t = targets_for(labels, list(zip(train_df["drive_id"], train_df["frame_index"])))
    held_t = targets_for(labels, list(zip(held_df["drive_id"], held_df["frame_index"])))
    cache_key = sha256_bytes(json.dumps([CURATION_VERSION, cfg.__dict__, list(train_df["object_sha256"]),
                                         [[b.tolist(), c] for b, c in ((t["boxes"], t["classes"]) for t in train_t)]],
                                        sort_keys=True, default=str).encode())
    store = _store(home)
    cache = home.cache / "teacher" / f"{cache_key}.json"
    if cache.exists() and store.has(json.loads(cache.read_text())["teacher"]):
        digest = json.loads(cache.read_text())["teacher"]
        teacher = Teacher.from_bytes(store.get_bytes(digest))
        reused = True
    else:
        teacher = train_teacher(load_images(store, list(train_df["object_sha256"])), train_t, ontology.classes, cfg)
        digest = store.put_bytes(teacher.to_bytes())
        atomic_write_json(cache, {"teacher": digest})
        reused = False
    held_imgs = load_images(store, list(held_df["object_sha256"])) if len(held_df) else np.zeros((0, 96, 96, 3), np.uint8)
    metrics = evaluate(teacher.predict(held_imgs), held_t, ontology.classes) if len(held_df) else {}
    base = evaluate(prior_box_baseline(train_t, ontology.classes)(held_imgs), held_t, ontology.classes) if len(held_df) else {}
    return TeacherResult(digest, reused, len(keys), len(train_df), metrics, base, list(teacher.training_curve),
                         dict(cfg.__dict__), source)


# ---------------------------------------------------------------- auto-labels
@dataclass
class AutoLabelResult:
    manifest: datasets.Manifest
    frames_per_second: float
    documents: dict[str, str]  # drive_id -> OpenLABEL document sha256


def auto_label(home: HomeLayout, cohort: str, teacher_digest: str, ontology: Ontology | None = None, batch_size: int = 64) -> AutoLabelResult:
    ontology = ontology or load_ontology()
    store = _store(home)
    frames, source = load_frames(home, cohort)
    teacher = Teacher.from_bytes(store.get_bytes(teacher_digest))
    images = load_images(store, list(frames["object_sha256"]))
    t0 = time.perf_counter()
    preds = teacher.predict(images, batch_size=batch_size)
    fps = len(images) / max(time.perf_counter() - t0, 1e-9)
    objects, docs = [], {}
    frames = frames.assign(
        uncertainty=[p.uncertainty for p in preds],
        disagreement=[p.disagreement for p in preds],
        n_detections=[len(p.classes) for p in preds],
        has_vru=[any(c in ontology.vru_classes for c in p.classes) for p in preds],
    )
    for (drive_id, vehicle_id), g in frames.groupby(["drive_id", "vehicle_id"]):
        fl = []
        for i, r in g.iterrows():
            p = preds[i]
            objs = [openlabel.ObjectLabel(tuple(float(v) for v in p.boxes[k]), p.classes[k], float(p.scores[k]), "auto") for k in range(len(p.classes))]
            fl.append(openlabel.FrameLabel(int(r.frame_index), float(r.timestamp), r.object_sha256, {c: r[c] for c in ODD}, objs))
            for k in range(len(p.classes)):
                objects.append({"drive_id": drive_id, "frame_index": int(r.frame_index), "x0": float(p.boxes[k][0]), "y0": float(p.boxes[k][1]),
                                "x1": float(p.boxes[k][2]), "y1": float(p.boxes[k][3]), "cls": p.classes[k], "confidence": float(p.scores[k]),
                                "entropy": float(p.entropy[k]), "margin": float(p.margin[k]), "agreement": float(p.agreement[k])})
        doc = openlabel.drive_document(drive_id, vehicle_id, cohort, fl, label_version=f"auto:{teacher_digest[:12]}")
        docs[drive_id] = store.put_bytes(openlabel.document_bytes(doc, drive_id))
    obj_cols = ["drive_id", "frame_index", "x0", "y0", "x1", "y1", "cls", "confidence", "entropy", "margin", "agreement"]
    tables = {"frames": pa.Table.from_pandas(frames, preserve_index=False),
              "objects": pa.Table.from_pandas(pd.DataFrame(objects, columns=obj_cols), preserve_index=False)}
    m = datasets.publish(store, home.refs, AUTO_LABELS, cohort, tables,
                         {"teacher_sha256": teacher_digest, "source_manifest": source, "openlabel_documents": docs,
                          "label_version": f"auto:{teacher_digest[:12]}", "curation_version": CURATION_VERSION})
    return AutoLabelResult(m, fps, docs)


# ---------------------------------------------------------------- review queue
@dataclass
class QueueResult:
    manifest: datasets.Manifest
    selected: int
    to_review: int
    tasks_exported: int
    reasons: dict[str, int]


def queue_reviews(home: HomeLayout, cohort: str, policy: CurationPolicy, process_reviews: Callable[[], None], seed: int = 0) -> QueueResult:
    store = _store(home)
    auto = _manifest(home, AUTO_LABELS, cohort)
    frames = datasets.read_table(store, auto, "frames").to_pandas()
    objects = datasets.read_table(store, auto, "objects").to_pandas()
    from avops.training.pipeline import shadow_signal  # shadow mode's disagreements feed selection

    shadow = shadow_signal(home, cohort)
    if shadow is not None:
        frames = frames.merge(shadow, on=["drive_id", "frame_index"], how="left")
    sel = select_frames(frames, SelectionConfig.from_policy(policy.selection), seed=seed)
    if policy.selection.get("review_test_split", False):
        # Safety gates judge the test split: its labels must be reviewed (gold), not the teacher's guesses.
        splits = assign_splits(list(sel.loc[sel["selected"], "drive_id"]), policy.splits)
        test = sel["selected"] & (sel["drive_id"].map(splits) == "test")
        sel.loc[test & ~sel["review"], "reasons"] = sel.loc[test & ~sel["review"], "reasons"].map(lambda r: ";".join(filter(None, [r, "gold:test_split"])))
        sel["review"] = sel["review"] | test
    exported = 0
    review = sel[sel["review"]]
    by_frame = dict(list(objects.groupby(["drive_id", "frame_index"])))
    no_objects = objects.iloc[0:0]
    for (drive_id, vehicle_id), g in review.groupby(["drive_id", "vehicle_id"]):
        fl = []
        for _, r in g.iterrows():
            o = by_frame.get((drive_id, r.frame_index), no_objects)
            fl.append(openlabel.FrameLabel(int(r.frame_index), float(r.timestamp), r.object_sha256, {c: r[c] for c in ODD},
                                           [openlabel.ObjectLabel((x.x0, x.y0, x.x1, x.y1), x.cls, float(x.confidence), "auto") for x in o.itertuples()]))
        exported += export_task(home, cohort, drive_id, vehicle_id, "review", fl, auto.body["label_version"]) is not None
    process_reviews()
    counts: dict[str, int] = {}
    for reasons in sel.loc[sel["selected"], "reasons"]:
        for r in reasons.split(";"):
            if r:
                counts[r] = counts.get(r, 0) + 1
    m = datasets.publish(store, home.refs, REVIEW_QUEUE, cohort, {"selection": pa.Table.from_pandas(sel, preserve_index=False)},
                         {"auto_labels_manifest": auto.digest, "policy": policy.selection})
    return QueueResult(m, int(sel["selected"].sum()), int(sel["review"].sum()), exported, counts)


# ---------------------------------------------------------------- curated set
@dataclass
class CuratedResult:
    manifest: datasets.Manifest
    commit_id: str
    branch: str
    samples: pd.DataFrame
    coverage: dict[str, int]
    label_stats: dict[str, int]
    returns_applied: int
    returns_quarantined: list
    rejected_frames: list
    split_sizes: dict[str, int] = field(default_factory=dict)


def build_curated_set(home: HomeLayout, cohort: str, policy: CurationPolicy, repo: DatasetRepository, run_id: str,
                      ontology: Ontology | None = None, min_auto_confidence: float = 0.3) -> CuratedResult:
    ontology = ontology or load_ontology()
    store = _store(home)
    queue = _manifest(home, REVIEW_QUEUE, cohort)
    auto = datasets.current(store, home.refs, AUTO_LABELS, cohort)
    sel = datasets.read_table(store, queue, "selection").to_pandas()
    objects = datasets.read_table(store, auto, "objects").to_pandas()
    known = set(zip(sel["drive_id"], sel["frame_index"].astype(int)))
    returns = collect_returns(home, cohort, known, ontology)
    # Every reviewed frame is kept (the teacher's seed set too): gold labels are the scarcest data there is.
    gold = pd.Series([k in returns.reviewed_frames for k in zip(sel["drive_id"], sel["frame_index"].astype(int))], index=sel.index)
    samples = sel[sel["selected"] | gold].copy()
    seed_only = ~samples["selected"]
    samples.loc[seed_only, "reasons"] = "reviewed_seed"
    keys = list(zip(samples["drive_id"], samples["frame_index"].astype(int)))
    reviewed = [k in returns.reviewed_frames for k in keys]
    samples["label_source"] = np.where(reviewed, "review", "auto")
    samples["reviewer"] = [returns.frame_reviews.get(k, (None, None))[0] for k in keys]
    samples["reviewed_at"] = [returns.frame_reviews.get(k, (None, None))[1] for k in keys]
    auto_sel = objects.merge(samples.loc[~np.array(reviewed), ["drive_id", "frame_index"]], on=["drive_id", "frame_index"])
    auto_sel = auto_sel[auto_sel["confidence"] >= min_auto_confidence].assign(source="auto", reviewer=None, reviewed_at=None)
    rev_sel = returns.labels.merge(samples.loc[np.array(reviewed), ["drive_id", "frame_index"]], on=["drive_id", "frame_index"]) if len(returns.labels) else returns.labels
    cols = ["drive_id", "frame_index", "x0", "y0", "x1", "y1", "cls", "confidence", "source", "reviewer", "reviewed_at"]
    labels = pd.concat([auto_sel[cols], rev_sel[cols]], ignore_index=True).sort_values(["drive_id", "frame_index", "x0"]).reset_index(drop=True)
    vru = labels[labels["cls"].isin(ontology.vru_classes)].groupby(["drive_id", "frame_index"]).size()
    samples["has_vru"] = [k in vru.index for k in keys]
    splits = assign_splits(list(samples["drive_id"]), policy.splits)
    samples["split"] = samples["drive_id"].map(splits)
    label_version = f"{auto.body['label_version']}+review:{len(returns.files_accepted)}"
    samples = samples.assign(sensor="camera_front", label_version=label_version, selection_reason=samples["reasons"])
    keep = ["drive_id", "vehicle_id", "frame_index", "sensor", "timestamp", "object_sha256", "label_version", "selection_reason",
            "label_source", "reviewer", "reviewed_at", "split", *ODD, "has_vru", "uncertainty", "disagreement"]
    samples = samples[keep].sort_values(["drive_id", "frame_index"]).reset_index(drop=True)
    cov = coverage(samples, policy.slices)
    stats = labels["cls"].value_counts().to_dict()

    branch = f"curated-{cohort}-{run_id[:8]}"
    repo.ensure()
    if branch not in repo.branches():
        repo.create_branch(branch, "main")
    prefix = f"cohorts/{cohort}"
    labels_by_frame = dict(list(labels.groupby(["drive_id", "frame_index"])))
    no_labels = labels.iloc[0:0]
    digests = {
        f"{prefix}/samples.parquet": repo.put(branch, f"{prefix}/samples.parquet", parquet_bytes(pa.Table.from_pandas(samples, preserve_index=False))),
        f"{prefix}/labels.parquet": repo.put(branch, f"{prefix}/labels.parquet", parquet_bytes(pa.Table.from_pandas(labels, preserve_index=False))),
    }
    for (drive_id, vehicle_id), g in samples.groupby(["drive_id", "vehicle_id"]):
        fl = []
        for _, r in g.iterrows():
            lab = labels_by_frame.get((drive_id, r.frame_index), no_labels)
            fl.append(openlabel.FrameLabel(int(r.frame_index), float(r.timestamp), r.object_sha256, {c: r[c] for c in ODD},
                                           [openlabel.ObjectLabel((x.x0, x.y0, x.x1, x.y1), x.cls, float(x.confidence), x.source,
                                                                  reviewer=x.reviewer, reviewed_at=x.reviewed_at) for x in lab.itertuples()],
                                           status="reviewed" if r.label_source == "review" else "labeled"))
        doc = openlabel.drive_document(drive_id, vehicle_id, cohort, fl, label_version=label_version)
        path = f"{prefix}/openlabel/{drive_id}.json"
        digests[path] = repo.put(branch, path, openlabel.document_bytes(doc, path))
    manifest_body = {"cohort": cohort, "label_version": label_version, "files": digests, "coverage": cov, "label_stats": stats,
                     "splits": samples["split"].value_counts().to_dict(), "source": {"review_queue": queue.digest, "auto_labels": auto.digest}}
    digests[f"{prefix}/manifest.json"] = repo.put(branch, f"{prefix}/manifest.json", json.dumps(manifest_body, sort_keys=True, indent=1).encode())
    commit = repo.commit(branch, f"curated set {cohort}", {"dagster_run_id": run_id, "cohort": cohort, "label_version": label_version,
                                                            "samples_sha256": digests[f"{prefix}/samples.parquet"]})
    m = datasets.publish(store, home.refs, CURATED_SETS, cohort,
                         {"samples": pa.Table.from_pandas(samples, preserve_index=False), "labels": pa.Table.from_pandas(labels, preserve_index=False)},
                         {"commit_id": commit.id, "branch": branch, "repository_files": digests, "coverage": cov,
                          "source": manifest_body["source"], "label_version": label_version})
    return CuratedResult(m, commit.id, branch, samples, cov, stats, len(returns.files_accepted),
                         [q.__dict__ for q in returns.quarantined], returns.rejected_frames, samples["split"].value_counts().to_dict())


def leakage(samples: pd.DataFrame) -> dict[str, list[str]]:
    return shared_drives(samples)


def slice_shortfalls(samples: pd.DataFrame, policy: CurationPolicy) -> dict[str, dict]:
    cov = coverage(samples, policy.slices)
    return {s.name: {"have": cov[s.name], "need": s.min_samples} for s in policy.slices if cov[s.name] < s.min_samples}


# ---------------------------------------------------------------- campaigns
def campaign_for(home: HomeLayout, cohort: str, policy: CurationPolicy, drives_per_vehicle: int = 1) -> tuple[Campaign | None, dict[str, int]]:
    """Coverage of the selected samples against slice targets -> a campaign spec (or None)."""
    store = _store(home)
    queue = _manifest(home, REVIEW_QUEUE, cohort)
    sel = datasets.read_table(store, queue, "selection").to_pandas()
    chosen = sel[sel["selected"]]
    cov = coverage(chosen, policy.slices)
    edge = chosen.sort_values("uncertainty", ascending=False).head(10)
    edges = [{"drive_id": r.drive_id, "frame_index": int(r.frame_index), "uncertainty": round(float(r.uncertainty), 3)} for r in edge.itertuples()]
    campaign = plan_campaign(cohort, cov, policy.slices, drives_per_vehicle=drives_per_vehicle, edge_cases=edges,
                             source={"review_queue": queue.digest}, content_key=queue.tables["selection"]["sha256"])
    return campaign, cov
