"""``config/maintenance.yaml``: components, labels and gates of the predictive maintenance model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from avops.drift.ks import DriftPolicy
from avops.fleet_registry import project_root

ENV_CONFIG = "AVOPS_MAINTENANCE_CONFIG"


@dataclass(frozen=True)
class ComponentGate:
    name: str
    threshold: float  # max (mae), min (skill) or min_lower_bound (recall)
    min_samples: int
    on_insufficient: str


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    features: tuple[str, ...]
    label_max_gap_days: float
    wear_limit_mm: float
    ridge_alpha: float
    gates: tuple[ComponentGate, ...]
    new_mm: float = 12.0  # thickness of a new part: what a replacement leaves


@dataclass(frozen=True)
class DriftSettings:
    policy: DriftPolicy
    min_drifted: int
    cooldown_hours: float
    field_mae_max_mm: float
    field_min_measurements: int


@dataclass(frozen=True)
class MaintenanceConfig:
    horizon_days: float
    components: tuple[ComponentSpec, ...]
    drift: DriftSettings
    path: str
    ecu: str = "gateway"  # the vehicle ECU that runs the model (its SoC: the ECU's `soc` in the fleet registry)
    parity_max_mm: float = 0.01  # engine vs checkpoint, per estimate


_GATE_KEYS = {"mae_upper_bound_mm": "max", "skill_vs_mean": "min", "limit_recall": "min_lower_bound"}


def load_maintenance_config(path: str | Path | None = None) -> MaintenanceConfig:
    p = Path(path or os.environ.get(ENV_CONFIG) or project_root() / "config" / "maintenance.yaml")
    raw = yaml.safe_load(p.read_text())
    comps = []
    for name, c in raw["components"].items():
        gates = []
        for g, spec in (c.get("gates") or {}).items():
            if g not in _GATE_KEYS:
                raise ValueError(f"{p}: component {name}: unknown gate {g!r}; known: {', '.join(_GATE_KEYS)}")
            if spec.get("on_insufficient", "block") not in ("block", "warn"):
                raise ValueError(f"{p}: component {name}: gate {g}: on_insufficient must be block or warn")
            gates.append(ComponentGate(g, float(spec[_GATE_KEYS[g]]), int(spec.get("min_samples", 1)), spec.get("on_insufficient", "block")))
        comps.append(ComponentSpec(name, tuple(c["features"]), float(c.get("label_max_gap_days", 45)), float(c["wear_limit_mm"]),
                                   float(c.get("ridge_alpha", 1.0)), tuple(gates), float(c.get("new_mm", 12.0))))
    d = raw.get("drift") or {}
    drift = DriftSettings(DriftPolicy(alpha=float(d.get("alpha", 0.01)), min_effect=float(d.get("min_effect", 0.1)),
                                      min_samples=int(d.get("min_samples", 500))),
                          int(d.get("min_drifted", 1)), float(d.get("cooldown_hours", 24)), float(d.get("field_mae_max_mm", 2.5)),
                          int(d.get("field_min_measurements", 3)))
    deploy = raw.get("deploy") or {}
    return MaintenanceConfig(float(raw.get("horizon_days", 90)), tuple(comps), drift, str(p), str(deploy.get("ecu", "gateway")),
                             float(deploy.get("parity_max_mm", 0.01)))
