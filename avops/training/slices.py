"""Detection metrics per ODD slice, with sample counts and worst-case lower bounds.

Objects are matched greedily by score (IoU >= 0.5, same class), then counted per slice:
recall = matched ground-truth objects / ground-truth objects, precision = true-positive
predictions / predictions. Each comes with the lower end of its confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from avops.curation.policy import where_mask
from avops.training.bounds import lower_bound


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_objects(pred_boxes: list[np.ndarray], pred_classes: list[list[str]], pred_scores: list[np.ndarray],
                  gt_boxes: list[np.ndarray], gt_classes: list[list[str]], iou: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-object match flags: (ground truth rows: frame, cls, matched), (prediction rows: frame, cls, score, tp)."""
    gts, preds = [], []
    for f, (pb, pc, ps, gb, gc) in enumerate(zip(pred_boxes, pred_classes, pred_scores, gt_boxes, gt_classes)):
        taken = np.zeros(len(gc), bool)
        ious = _iou(np.asarray(pb, float).reshape(-1, 4), np.asarray(gb, float).reshape(-1, 4))
        for p in np.argsort(-np.asarray(ps, float), kind="stable"):
            cand = [g for g in range(len(gc)) if not taken[g] and gc[g] == pc[p] and ious[p, g] >= iou]
            best = max(cand, key=lambda g: ious[p, g]) if cand else None
            if best is not None:
                taken[best] = True
            preds.append({"frame": f, "cls": pc[p], "score": float(ps[p]), "tp": best is not None})
        gts += [{"frame": f, "cls": c, "matched": bool(t)} for c, t in zip(gc, taken)]
    return (pd.DataFrame(gts, columns=["frame", "cls", "matched"]), pd.DataFrame(preds, columns=["frame", "cls", "score", "tp"]))


@dataclass(frozen=True)
class SliceSpec:
    name: str
    where: dict
    classes: tuple[str, ...] = ()

    def frames(self, frames: pd.DataFrame) -> pd.Index:
        return frames.index[where_mask(frames, self.where, self.name)]


def slice_metrics(frames: pd.DataFrame, gt: pd.DataFrame, pred: pd.DataFrame, slices: list[SliceSpec],
                  bound: str = "wilson", confidence: float = 0.95) -> pd.DataFrame:
    """One row per slice: frames, objects, recall and its lower bound, predictions, precision and its lower bound."""
    rows = []
    for s in slices:
        idx = set(s.frames(frames))
        g = gt[gt["frame"].isin(idx)]
        p = pred[pred["frame"].isin(idx)]
        if s.classes:
            g, p = g[g["cls"].isin(s.classes)], p[p["cls"].isin(s.classes)]
        n_obj, tp_obj = len(g), int(g["matched"].sum())
        n_pred, tp_pred = len(p), int(p["tp"].sum())
        rows.append({
            "slice": s.name, "frames": len(idx), "objects": n_obj, "matched": tp_obj,
            "recall": tp_obj / n_obj if n_obj else float("nan"),
            "recall_lower": lower_bound(bound, tp_obj, n_obj, confidence),
            "predictions": n_pred, "true_positives": tp_pred,
            "precision": tp_pred / n_pred if n_pred else float("nan"),
            "precision_lower": lower_bound(bound, tp_pred, n_pred, confidence),
        })
    return pd.DataFrame(rows)
