"""The driver-state network, its weights as named arrays (what a vehicle uploads), and per-slice evaluation.

Small on purpose: it runs on the in-cabin SoC next to the camera, and it is what crosses the
uplink every round. GroupNorm, not BatchNorm: DP-SGD needs per-sample gradients, and batch
statistics would mix samples.
"""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import pandas as pd
import torch
from torch import nn

from avops.occupant.cabin import ATTRIBUTES


class DriverStateNet(nn.Module):
    """Input: [batch, 1, 32, 32] float in [0, 1]; output: logits over the driver states."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(16 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def new_model(classes: int, seed: int) -> DriverStateNet:
    torch.manual_seed(seed)
    return DriverStateNet(classes)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames.astype(np.float32) / 255.0).unsqueeze(1)


def get_arrays(model: nn.Module) -> "OrderedDict[str, np.ndarray]":
    """The model's parameters as named float32 arrays (Opacus' wrapper prefix removed)."""
    return OrderedDict((k.removeprefix("_module."), v.detach().cpu().numpy().astype(np.float32).copy())
                       for k, v in model.state_dict().items())


def set_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    expected = model.state_dict()
    if set(arrays) != set(expected):
        raise ValueError(f"weights do not match the network: missing {sorted(set(expected) - set(arrays))}, "
                         f"unexpected {sorted(set(arrays) - set(expected))}")
    model.load_state_dict({k: torch.from_numpy(np.asarray(arrays[k], np.float32)) for k in expected})


def schema(classes: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every array a model update may carry: the uplink's allow-list."""
    return {k: tuple(v.shape) for k, v in get_arrays(DriverStateNet(classes)).items()}


def arrays_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, np.float32) for k, v in sorted(arrays.items())})
    return buf.getvalue()


def arrays_from_bytes(data: bytes) -> "OrderedDict[str, np.ndarray]":
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return OrderedDict((k, z[k]) for k in z.files)


@torch.no_grad()
def predict(model: nn.Module, frames: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = [model(to_tensor(frames[i:i + batch])).argmax(1).numpy() for i in range(0, len(frames), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def accuracy(model: nn.Module, frames: np.ndarray, labels: pd.DataFrame, states: tuple[str, ...]) -> float:
    y = labels["state"].map({s: i for i, s in enumerate(states)}).to_numpy()
    return float((predict(model, frames) == y).mean()) if len(y) else float("nan")


def slice_table(pred: np.ndarray, labels: pd.DataFrame, states: tuple[str, ...]) -> pd.DataFrame:
    """Accuracy per slice: overall, each driver state (distraction type), each value of each occupant attribute."""
    y = labels["state"].map({s: i for i, s in enumerate(states)}).to_numpy()
    ok = pred == y
    rows = [{"attribute": "all", "value": "all", "frames": int(len(y)), "accuracy": float(ok.mean()) if len(y) else float("nan")}]
    for attr in ("state", *ATTRIBUTES):
        for value, idx in labels.groupby(attr).indices.items():
            rows.append({"attribute": attr, "value": str(value), "frames": int(len(idx)), "accuracy": float(ok[idx].mean())})
    return pd.DataFrame(rows)
