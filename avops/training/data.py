"""A curated set as training reads it: pinned to one dataset commit, split by drive.

Training never reads "the latest" labels: it resolves a commit id in the dataset
repository (embedded or lakeFS) and reads the cohort's samples and labels at that
commit, so the checkpoint's lineage names exactly the bytes it learned from.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.parquet as pq

from avops.curation.pipeline import load_images, targets_for
from avops.store import sha256_bytes
from avops.versioning.base import DatasetRepository

__all__ = ["TrainingSet", "load_images", "load_training_set", "targets_for"]

@dataclass
class TrainingSet:
    """Samples (one row per frame, with ``split`` and ODD columns) and their labels, at ``commit_id``."""

    cohort: str
    commit_id: str
    samples: pd.DataFrame
    labels: pd.DataFrame
    file_digests: dict[str, str] = field(default_factory=dict)  # repository path -> sha256 of what was read
    manifest_sha256: str = ""

    def split(self, name: str) -> pd.DataFrame:
        return self.samples[self.samples["split"] == name].reset_index(drop=True)

    def targets(self, frames: pd.DataFrame) -> list[dict]:
        """Boxes and classes per frame of ``frames`` (rows with ``drive_id``, ``frame_index``)."""
        return targets_for(self.labels, list(zip(frames["drive_id"], frames["frame_index"].astype(int))))

    def without(self, where: dict, split: str = "train") -> "TrainingSet":
        """A copy with the ``split`` frames matching ``where`` removed (planted faults, ablations)."""
        from avops.curation.policy import where_mask

        drop = (self.samples["split"] == split) & where_mask(self.samples, where, "without")
        kept = self.samples[~drop].reset_index(drop=True)
        keys = set(zip(kept["drive_id"], kept["frame_index"].astype(int)))
        lab = self.labels[[k in keys for k in zip(self.labels["drive_id"], self.labels["frame_index"].astype(int))]]
        return TrainingSet(self.cohort, self.commit_id, kept, lab.reset_index(drop=True), dict(self.file_digests),
                           self.manifest_sha256)


def load_training_set(repo: DatasetRepository, ref: str, cohort: str) -> TrainingSet:
    """Read ``cohorts/<cohort>/{samples,labels,manifest}`` at ``ref`` (a commit id, tag or branch)."""
    commit = repo.resolve(ref)
    prefix = f"cohorts/{cohort}"
    try:
        raw = {name: repo.get(commit, f"{prefix}/{name}") for name in ("samples.parquet", "labels.parquet", "manifest.json")}
    except Exception as exc:  # noqa: BLE001 - both backends raise their own not-found errors
        raise LookupError(f"dataset commit {commit[:12]} has no curated set for {cohort} under {prefix}/ "
                          f"(materialize curation/released_sets for {cohort} first): {exc}") from exc
    samples = pq.read_table(io.BytesIO(raw["samples.parquet"])).to_pandas()
    labels = pq.read_table(io.BytesIO(raw["labels.parquet"])).to_pandas()
    manifest = json.loads(raw["manifest.json"])
    if manifest.get("cohort") != cohort:
        raise ValueError(f"{prefix}/manifest.json at {commit[:12]} is for cohort {manifest.get('cohort')!r}, not {cohort!r}")
    return TrainingSet(cohort, commit, samples, labels, {f"{prefix}/{k}": sha256_bytes(v) for k, v in raw.items()},
                       sha256_bytes(raw["manifest.json"]))
