"""Evaluate a checkpoint on the test split per ODD slice, and judge the safety gates.

The candidate and the cohort's production model are evaluated on the *same* frames (the
candidate's test split at its dataset commit), so the regression term of a gate compares
like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from avops.curation.detector import FrameDetections
from avops.store import ObjectStore
from avops.training.checkpoints import Detector
from avops.training.data import TrainingSet, load_images
from avops.training.gates import GatePolicy, GateResult, evaluate_gates
from avops.training.slices import match_objects, slice_metrics


def predict(model: Detector, store: ObjectStore, digests: list[str], batch: int = 128) -> list[FrameDetections]:
    """Run ``model`` over frames by digest, loading a batch at a time to bound memory."""
    out: list[FrameDetections] = []
    for a in range(0, len(digests), batch):
        out += model.predict(load_images(store, digests[a:a + batch]))
    return out


@dataclass
class Evaluation:
    frames: pd.DataFrame  # the evaluated frames (row i = frame i in the match tables)
    gt: pd.DataFrame  # ground-truth objects: frame, cls, matched
    pred: pd.DataFrame  # predictions: frame, cls, score, tp
    slices: pd.DataFrame  # one row per gate slice (see slice_metrics)


def evaluate_on(model: Detector, store: ObjectStore, data: TrainingSet, policy: GatePolicy, split: str = "test",
                images: np.ndarray | None = None) -> Evaluation:
    """Slice metrics of ``model`` on a split; pass the split's ``images`` when several models are judged on them."""
    frames = data.split(split)
    if frames.empty:
        raise ValueError(f"curated set {data.cohort}@{data.commit_id[:12]} has no {split} split: the gates have no evidence")
    targets = data.targets(frames)
    dets = model.predict(images) if images is not None else predict(model, store, list(frames["object_sha256"]))
    gt, pred = match_objects([d.boxes for d in dets], [list(d.classes) for d in dets], [d.scores for d in dets],
                             [t["boxes"] for t in targets], [t["classes"] for t in targets], iou=policy.iou)
    return Evaluation(frames, gt, pred, slice_metrics(frames, gt, pred, policy.slices, policy.bound, policy.confidence))


def judge(policy: GatePolicy, candidate: Evaluation, production: Evaluation | None) -> list[GateResult]:
    return evaluate_gates(policy, candidate.slices, production.slices if production is not None else None)


def per_class_recall(ev: Evaluation) -> dict[str, float]:
    g = ev.gt.groupby("cls")["matched"].mean()
    return {str(k): float(v) for k, v in g.items() if not np.isnan(v)}
