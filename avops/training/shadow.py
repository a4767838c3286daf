"""Shadow mode: a candidate runs beside the production model on unlabeled fleet frames.

No labels are needed: where the two disagree, at least one is wrong. The disagreement
rate per ODD slice shows where a rollout would change behaviour, and the disagreeing
frames go to the data engine's selection (column ``shadow_disagreement``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from avops.training.slices import SliceSpec, _iou


def frame_disagreement(a_boxes: np.ndarray, a_classes: list[str], b_boxes: np.ndarray, b_classes: list[str], iou: float = 0.5) -> float:
    """1 - F1 of matching the two models' detections to each other (0 when both see nothing)."""
    na, nb = len(a_classes), len(b_classes)
    if na == 0 and nb == 0:
        return 0.0
    ious = _iou(np.asarray(a_boxes, float).reshape(-1, 4), np.asarray(b_boxes, float).reshape(-1, 4))
    used, matched = set(), 0
    for i in range(na):
        cand = [j for j in range(nb) if j not in used and b_classes[j] == a_classes[i] and ious[i, j] >= iou]
        if cand:
            used.add(max(cand, key=lambda j: ious[i, j]))
            matched += 1
    return 1.0 - 2.0 * matched / (na + nb)


def shadow_compare(frames: pd.DataFrame, candidate: list, production: list, slices: list[SliceSpec],
                   threshold: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-frame disagreement (``frames`` + ``shadow_disagreement``, ``disagrees``) and the rate per slice.

    ``candidate``/``production`` are per-frame detections with ``boxes`` and ``classes`` (e.g. FrameDetections).
    """
    if not (len(frames) == len(candidate) == len(production)):
        raise ValueError(f"shadow mode needs one prediction per frame: {len(frames)} frames, {len(candidate)} and {len(production)} predictions")
    d = [frame_disagreement(c.boxes, list(c.classes), p.boxes, list(p.classes)) for c, p in zip(candidate, production)]
    out = frames.assign(shadow_disagreement=d, disagrees=np.array(d) >= threshold)
    rows = []
    for s in slices:
        idx = s.frames(out)
        if s.classes:  # e.g. VRUs: frames where either model sees one, judged on those classes only
            keep = set(s.classes)
            pairs = [(_only(candidate[i], keep), _only(production[i], keep)) for i in idx]
            dis = pd.Series([frame_disagreement(cb, cc, pb, pc) for (cb, cc), (pb, pc) in pairs], index=idx)
            dis = dis[[bool(len(cc) or len(pc)) for (_, cc), (_, pc) in pairs]]
            flags = dis >= threshold
        else:
            flags = out.loc[idx, "disagrees"]
        rows.append({"slice": s.name, "frames": len(flags), "disagreeing": int(flags.sum()),
                     "rate": float(flags.mean()) if len(flags) else float("nan")})
    return out, pd.DataFrame(rows)


def _only(det, classes: set[str]) -> tuple[np.ndarray, list[str]]:
    cls = list(det.classes)
    sel = [i for i, c in enumerate(cls) if c in classes]
    return np.asarray(det.boxes, float).reshape(-1, 4)[sel], [cls[i] for i in sel]
