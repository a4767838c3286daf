"""The rollout policy (``config/rollout.yaml``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from avops.fleet_registry import project_root

ENV_ROLLOUT = "AVOPS_ROLLOUT_POLICY"


@dataclass(frozen=True)
class RolloutPolicy:
    waves: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)
    min_vehicles_per_wave: int = 1
    success_threshold: float = 0.95
    error_threshold: float = 0.2
    soak_seconds: float = 3600.0
    auto_rollback: bool = True
    health: dict = field(default_factory=lambda: {"max_inference_ms": 50.0})


def load_rollout_policy(path: str | Path | None = None, **overrides) -> RolloutPolicy:
    p = Path(path or os.environ.get(ENV_ROLLOUT) or project_root() / "config" / "rollout.yaml")
    raw = {**(yaml.safe_load(p.read_text()) or {}), **overrides}
    waves = tuple(float(w) for w in raw.get("waves", ()))
    if not waves or any(b <= a for a, b in zip(waves, waves[1:])) or waves[-1] != 1.0 or waves[0] <= 0:
        raise ValueError(f"{p}: waves must increase from above 0 to exactly 1.0, got {list(waves)}")
    return RolloutPolicy(waves, int(raw.get("min_vehicles_per_wave", 1)), float(raw.get("success_threshold", 0.95)),
                         float(raw.get("error_threshold", 0.2)), float(raw.get("soak_seconds", 3600)),
                         bool(raw.get("auto_rollback", True)), dict(raw.get("health") or {}))
