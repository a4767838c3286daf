"""The SIMULATED reviewer: answers review tasks from the simulator's ground truth.

This stands in for people in the demo and tests, and it is the only curation code
that reads ``sim_truth``. It behaves like a labeling vendor: it picks up tasks older
than a delay and returns OpenLABEL documents with reviewed boxes, reviewer and time.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from avops.curation import openlabel
from avops.curation.reviews import returns_dir, tasks_dir
from avops.home import HomeLayout

REVIEWER = "simulated-reviewer"


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
        meta, frames = openlabel.parse_document(openlabel.load_document(task))
        truth = _truth(home, cohort, meta["drive_id"])
        by_index = {f["frame_index"]: f for f in truth.get("camera_frames", [])}
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for fr in frames:
            t = by_index.get(fr.frame_index)
            fr.status = "reviewed"
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
