"""The AOI defect classifier: a small CNN per line, judged on held-out audited parts.

Trained only on parts of the line's current configuration (a moved camera or new lighting
makes older images a different task), deterministic for a seed, and judged by the two numbers
a quality engineer signs off: defect recall (Wilson lower bound) and false-alarm rate on good
parts (Wilson upper bound), each with a minimum count.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from avops.manufacturing.lines import LineGates
from avops.training.bounds import wilson_lower


class AoiNet(nn.Module):
    """Three conv blocks and a global max pool: a defect is a local pattern wherever it sits on the part."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1))
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, 1, 32, 32) in [0, 1] -> logits (n,)
        return self.head(self.features(x).flatten(1)).squeeze(1)


def _tensor(images: np.ndarray) -> torch.Tensor:
    """Per-image standardization: a brighter lamp or a darker variant should not look like a defect."""
    x = images.astype(np.float32) / 255.0
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-3)
    return torch.from_numpy(x).unsqueeze(1)


def train(images: np.ndarray, labels: np.ndarray, seed: int = 0, epochs: int = 60) -> AoiNet:
    """Adam on weighted BCE (defects are rare), full-batch-free minibatches of 64, fixed seed."""
    torch.manual_seed(seed)
    model = AoiNet()
    x, y = _tensor(images), torch.from_numpy(labels.astype(np.float32))
    pos = max(1.0, float(y.sum()))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / pos))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def predict(model: AoiNet, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(_tensor(images))).numpy()


def to_bytes(model: AoiNet) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> AoiNet:
    model = AoiNet()
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return model.eval()


def held_out(part_ids: list[str], labels: np.ndarray, share: float = 0.3) -> np.ndarray:
    """A stable split stratified by label: within each class, the parts whose id hashes lowest are held
    out, so the same part is always on the same side and rare defects are never short on the test side."""
    rank = np.array([int(hashlib.sha256(p.encode()).hexdigest()[:12], 16) for p in part_ids])
    out = np.zeros(len(part_ids), bool)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        out[idx[np.argsort(rank[idx])[: int(round(share * len(idx)))]]] = True
    return out


@dataclass
class AoiEvaluation:
    defects: int
    detected: int
    good: int
    false_alarms: int
    recall: float
    recall_lower: float
    false_alarm_rate: float
    false_alarm_upper: float

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> AoiEvaluation:
    flagged = scores >= threshold
    d, g = int((labels == 1).sum()), int((labels == 0).sum())
    hit, fa = int((flagged & (labels == 1)).sum()), int((flagged & (labels == 0)).sum())
    return AoiEvaluation(d, hit, g, fa, hit / d if d else float("nan"), wilson_lower(hit, d) if d else float("nan"),
                         fa / g if g else float("nan"), 1 - wilson_lower(g - fa, g) if g else float("nan"))


def judge(ev: AoiEvaluation, gates: LineGates) -> list[dict]:
    out = []
    for gate, value, threshold, n, need, ok in (
        ("defect_recall", ev.recall_lower, gates.defect_recall_min_lb, ev.defects, gates.min_defects, lambda v, t: v >= t),
        ("false_alarm_rate", ev.false_alarm_upper, gates.false_alarm_max_ub, ev.good, gates.min_good, lambda v, t: v <= t),
    ):
        if n < need:
            status, reason = "insufficient", f"{n} held-out parts < {need} required"
        else:
            status = "passed" if ok(value, threshold) else "failed"
            reason = f"{'lower' if gate == 'defect_recall' else 'upper'} bound {value:.3f} {'meets' if status == 'passed' else 'misses'} {threshold:g}"
        out.append({"gate": gate, "value": None if value != value else value, "threshold": threshold, "samples": n, "min_samples": need,
                    "status": status, "blocks": status != "passed", "reason": reason})
    return out
