"""The SIMULATED reviewer: answers review tasks from the simulator's ground truth.

This stands in for people in the demo and tests, and it is the only curation code
that reads ``sim_truth``. It behaves like a labeling vendor: it picks up tasks older
than a delay and returns OpenLABEL documents with reviewed boxes, reviewer and time.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np

from avops.curation import openlabel
from avops.curation.detector import _iou
from avops.curation.reviews import returns_dir, tasks_dir
from avops.home import HomeLayout

REVIEWER = "simulated-reviewer"
VRU = ("pedestrian", "cyclist")
INCIDENT_MIN_HEIGHT_PX = 10.0  # a VRU this tall is close: missing it is what a field incident report describes


def _incident(truth_boxes, truth_classes, prelabels, odd: dict) -> str | None:
    """Report an incident when the field model's labels missed a close vulnerable road user."""
    for box, cls in zip(truth_boxes, truth_classes):
        if cls in VRU and box[3] - box[1] >= INCIDENT_MIN_HEIGHT_PX and not any(
                o.cls == cls and _iou(np.asarray([o.box], np.float32), np.asarray([box], np.float32))[0, 0] >= 0.3 for o in prelabels):
            return f"missed {cls} at close range ({odd.get('illumination')}, {odd.get('weather')})"
    return None


def _truth(home: HomeLayout, cohort: str, drive_id: str) -> dict:
    vehicle = drive_id.rsplit("_", 1)[0]
    path = home.sim_truth / cohort / vehicle / f"{drive_id}.json"
    if not path.exists():
        raise FileNotFoundError(f"simulated reviewer: no ground truth for {drive_id} at {path}")
    return json.loads(path.read_text())


def answer_tasks(home: HomeLayout, cohort: str, delay_seconds: float = 0.0, now: float | None = None) -> int:
    """Answer every task of ``cohort`` older than ``delay_seconds``; returns how many were answered."""
    now = time.time() if now is None else now
    answered = 0
    folder = tasks_dir(home, cohort)
    for task in sorted(folder.glob("*.json")) if folder.exists() else []:
        out = returns_dir(home, cohort) / task.name
        if out.exists() or now - task.stat().st_mtime < delay_seconds:
            continue
        doc = openlabel.load_document(task)
        meta, frames = openlabel.parse_document(doc)
        field_model_labels = "review" in str(doc.get("openlabel", {}).get("metadata", {}).get("annotator", ""))
        truth = _truth(home, cohort, meta["drive_id"])
        by_index = {f["frame_index"]: f for f in truth.get("camera_frames", [])}
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for fr in frames:
            t = by_index.get(fr.frame_index)
            fr.status = "reviewed"
            if t is not None and field_model_labels:
                fr.incident = _incident(t["boxes"], t["classes"], fr.objects, fr.odd)
            fr.objects = [] if t is None else [
                openlabel.ObjectLabel(box=tuple(float(v) for v in box), cls=cls, confidence=1.0, source="review",
                                      reviewer=REVIEWER, reviewed_at=stamp)
                for box, cls in zip(t["boxes"], t["classes"])
            ]
        doc = openlabel.drive_document(meta["drive_id"], meta["vehicle_id"], cohort, frames,
                                       label_version=meta.get("label_version", "review"), annotator=REVIEWER)
        openlabel.write_document(out, doc)
        answered += 1
    return answered
