"""Perception checkpoints: trained on a pinned curated set, stored content-addressed with provenance.

The weights are the artifact (their sha256 is the checkpoint's identity, identical for
the same data, config and seed); a separate provenance record, also content-addressed,
names what produced them: dataset commit and manifest digest, the digests of the files
read, code revision, every hyperparameter, library versions and the training curve.
The architecture is the teacher's CenterNet-style detector with a single member.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from avops.curation.detector import Teacher, TeacherConfig, train_teacher
from avops.fleet_registry import project_root
from avops.store import ObjectStore, sha256_bytes
from avops.training.data import TrainingSet, load_images
from avops.training.provenance import git_revision, library_versions

ENV_TRAINING = "AVOPS_TRAINING_CONFIG"
PROVENANCE_FORMAT = "avops-checkpoint-provenance/1"
Detector = Teacher  # one-member ensemble: same code path for predicting, serializing and loading


@dataclass(frozen=True)
class TrainConfig:
    model: str = "perception"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 4e-3
    width: int = 16
    seed: int = 0
    score_threshold: float = 0.3
    class_score_thresholds: dict | None = None
    augment: bool = True

    def detector_config(self) -> TeacherConfig:
        return TeacherConfig(members=1, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, width=self.width,
                             seed=self.seed, score_threshold=self.score_threshold, augment=self.augment,
                             class_score_thresholds=dict(self.class_score_thresholds) if self.class_score_thresholds else None)


def load_train_config(path: str | Path | None = None) -> TrainConfig:
    """``config/training.yaml`` (or ``$AVOPS_TRAINING_CONFIG``); unknown keys are an error, not ignored."""
    p = Path(path or os.environ.get(ENV_TRAINING) or project_root() / "config" / "training.yaml")
    raw = yaml.safe_load(p.read_text()) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{p}: unknown training setting(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**raw)


@dataclass
class Checkpoint:
    digest: str  # sha256 of the weights
    provenance_digest: str
    provenance: dict
    model: Detector


def train_checkpoint(store: ObjectStore, data: TrainingSet, classes: tuple[str, ...], config: TrainConfig,
                     code: dict | None = None, progress: Callable[[int, int, float], None] | None = None) -> Checkpoint:
    """Train on ``data``'s train split; store weights and provenance in ``store``."""
    train = data.split("train")
    if train.empty:
        raise ValueError(f"curated set {data.cohort}@{data.commit_id[:12]} has no train split frames: "
                         "grow the curated set (budget_frames in config/curation.yaml) or collect more drives")
    images = load_images(store, list(train["object_sha256"]))
    model = train_teacher(images, data.targets(train), classes, config.detector_config(), progress)
    weights = model.to_bytes()
    digest = store.put_bytes(weights)
    provenance = {
        "format": PROVENANCE_FORMAT,
        "model": config.model,
        "architecture": "centernet-stride4-1member",
        "cohort": data.cohort,
        "weights_sha256": digest,
        "classes": list(classes),
        "dataset": {
            "commit_id": data.commit_id,
            "manifest_sha256": data.manifest_sha256,
            "files_read": data.file_digests,
            "train_frames": len(train),
            "train_frame_digests_sha256": sha256_bytes("\n".join(sorted(train["object_sha256"])).encode()),
        },
        "code": {**git_revision(), **(code or {})},
        "hyperparameters": asdict(config),
        "seed": config.seed,
        "libraries": library_versions(),
        "training_curve": model.training_curve,
    }
    return Checkpoint(digest, store.put_json(provenance), provenance, model)


def load_checkpoint(store: ObjectStore, digest: str) -> Detector:
    """Load verified weights by digest (a corrupted object fails loudly)."""
    return Detector.from_bytes(store.get_bytes(digest, verify=True))
