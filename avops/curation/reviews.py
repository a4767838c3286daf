"""The human review queue: export OpenLABEL tasks, take reviewed labels back.

Tasks go to ``review/tasks/<cohort>/<task>.json``; reviewers (or a labeling vendor's
tool) put OpenLABEL documents with reviewed frames into ``review/returns/<cohort>/``.
Reviewed labels override auto-labels, with the reviewer and the time recorded. A
return that cannot be used is quarantined with a reason; the rest of the batch is
still applied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from avops.curation import openlabel
from avops.curation.ontology import Ontology
from avops.home import HomeLayout
from avops.ingest.quarantine import IngestError, Quarantined, quarantine
from avops.store import atomic_write_json, sha256_file


def review_root(home: HomeLayout) -> Path:
    return home.root / "review"


def tasks_dir(home: HomeLayout, cohort: str) -> Path:
    return review_root(home) / "tasks" / cohort


def returns_dir(home: HomeLayout, cohort: str) -> Path:
    return review_root(home) / "returns" / cohort


def task_id(drive_id: str, purpose: str, frame_indices: list[int]) -> str:
    digest = hashlib.sha256(json.dumps([drive_id, purpose, sorted(frame_indices)]).encode()).hexdigest()[:10]
    return f"{drive_id}.{purpose}.{digest}"


def export_task(home: HomeLayout, cohort: str, drive_id: str, vehicle_id: str, purpose: str,
                frames: list[openlabel.FrameLabel], label_version: str) -> Path | None:
    """Write one review task (idempotent: an existing task or return with the same id is kept)."""
    tid = task_id(drive_id, purpose, [f.frame_index for f in frames])
    path = tasks_dir(home, cohort) / f"{tid}.json"
    if path.exists() or (returns_dir(home, cohort) / f"{tid}.json").exists():
        return None
    for f in frames:
        f.status = "to_review"
    doc = openlabel.drive_document(drive_id, vehicle_id, cohort, frames, label_version=label_version, annotator=f"avops-review-task:{purpose}")
    openlabel.write_document(path, doc)
    return path


@dataclass
class ReturnsResult:
    labels: pd.DataFrame                     # one row per reviewed object (or an empty-frame marker row with cls None)
    reviewed_frames: set[tuple[str, int]]    # (drive_id, frame_index) that a person reviewed
    files_accepted: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    rejected_frames: list[dict] = field(default_factory=list)
    frame_reviews: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)  # (drive, frame) -> (reviewer, reviewed_at)
    incidents: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)  # (drive, frame) -> (report, reviewer)


def collect_returns(home: HomeLayout, cohort: str, known_frames: set[tuple[str, int]], ontology: Ontology) -> ReturnsResult:
    """Read every return of a cohort; quarantine unusable files, reject frames that do not exist."""
    rows: dict[tuple[str, int], list[dict]] = {}  # the latest review of a frame wins
    reviewed: set[tuple[str, int]] = set()
    result = ReturnsResult(pd.DataFrame(), reviewed)
    folder = returns_dir(home, cohort)
    quarantine_root = review_root(home) / "quarantine"
    paths = sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name)) if folder.exists() else []
    for path in paths:
        try:
            doc = openlabel.load_document(path)
            errors = openlabel.validate_document(doc)
            if errors:
                raise IngestError(path, "openlabel_invalid", "; ".join(errors[:3]))
            meta, frames = openlabel.parse_document(doc, ontology)
        except openlabel.OpenLabelError as exc:
            reason = "unknown_class" if exc.reason == "unknown_class" else "openlabel_invalid"
            result.quarantined.append(quarantine(path, folder.parent, quarantine_root, IngestError(path, reason, str(exc))))
            continue
        except IngestError as exc:
            result.quarantined.append(quarantine(path, folder.parent, quarantine_root, exc))
            continue
        drive_id = meta["drive_id"]
        annotator = str(doc.get("openlabel", {}).get("metadata", {}).get("annotator", "unknown"))
        returned_at = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        bad = []
        for fr in frames:
            key = (drive_id, fr.frame_index)
            if key not in known_frames:
                bad.append({"drive_id": drive_id, "frame_index": fr.frame_index, "reason": "unknown_sample"})
                continue
            reviewed.add(key)
            first = fr.objects[0] if fr.objects else None
            result.frame_reviews[key] = ((first.reviewer if first and first.reviewer else annotator),
                                         (first.reviewed_at if first and first.reviewed_at else returned_at))
            rows[key] = []
            if fr.incident:
                result.incidents[key] = (fr.incident.strip(), result.frame_reviews[key][0])
            else:
                result.incidents.pop(key, None)
            for obj in fr.objects:
                rows[key].append({
                    "drive_id": drive_id, "frame_index": fr.frame_index,
                    "x0": obj.box[0], "y0": obj.box[1], "x1": obj.box[2], "y1": obj.box[3],
                    "cls": obj.cls, "confidence": 1.0, "source": "review",
                    "reviewer": obj.reviewer or "unknown", "reviewed_at": obj.reviewed_at or "",
                })
        if bad:
            record = quarantine_root / cohort / f"{path.name}.rejected-frames.json"
            atomic_write_json(record, {"file": str(path), "sha256": sha256_file(path), "reason": "unknown_sample",
                                       "reason_text": "a review refers to a frame that does not exist in the cohort's drives",
                                       "frames": bad, "next_step": "check the drive id and frame index of these frames"})
            result.rejected_frames += bad
        result.files_accepted.append(path.name)
    result.labels = pd.DataFrame([r for k in sorted(rows) for r in rows[k]], columns=["drive_id", "frame_index", "x0", "y0", "x1", "y1", "cls", "confidence", "source", "reviewer", "reviewed_at"])
    return result
