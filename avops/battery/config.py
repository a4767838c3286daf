"""``config/battery.yaml``: chemistries, fleets (vehicle cohorts and stationary storage), aging and profiles."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avops.fleet_registry import project_root, validate_partition_key

ENV_CONFIG = "AVOPS_BATTERY_CONFIG"
KINDS = ("vehicle", "stationary")


class BatteryConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Chemistry:
    name: str
    parameter_set: str
    rated_capacity_ah: float
    v_min: float
    v_max: float
    sei_rate_constant: float
    window_v: tuple[float, float]
    sei_parameters_from: str | None = None
    peak_separation_v: float = 0.06


@dataclass(frozen=True)
class FleetUsage:
    """How one fleet uses its cells: what makes cohorts age differently."""

    id: str
    kind: str
    chemistry: str
    ambient_c: float
    temperature_spread_c: float
    fast_charge_share: float
    depth_of_discharge: float
    cycles_per_day: float
    units: int | None = None  # stationary fleets: storage units (vehicle fleets: the cohort's vehicles)


@dataclass(frozen=True)
class SimProfile:
    cells_per_unit: int
    stationary_units: int
    reference_every: int  # usage cycles between two reference tests
    reference_tests: int


@dataclass(frozen=True)
class ModelGate:
    name: str
    target: str
    threshold: float
    min_cells: int
    on_insufficient: str


@dataclass(frozen=True)
class ModelSettings:
    features: tuple[str, ...]
    ridge_alpha: float
    end_of_life_soh: float
    bands: dict[str, tuple[float, float]]
    gates: tuple[ModelGate, ...]
    ecu: str
    parity_max_soh: float
    parity_max_rul_cycles: float


_GATES = {"soh_mae_upper_bound": "soh", "rul_mae_upper_bound_cycles": "rul_cycles"}


def _model(raw: dict, where: str) -> ModelSettings:
    from avops.battery.features import FEATURE_NAMES

    feats = tuple(raw.get("features") or FEATURE_NAMES)
    unknown = [f for f in feats if f not in FEATURE_NAMES]
    if unknown:
        raise BatteryConfigError(f"{where}: model.features has unknown features {unknown}; known: {', '.join(FEATURE_NAMES)}")
    gates = []
    for g, spec in (raw.get("gates") or {}).items():
        if g not in _GATES:
            raise BatteryConfigError(f"{where}: model.gates: unknown gate {g!r}; known: {', '.join(_GATES)}")
        if spec.get("on_insufficient", "block") not in ("block", "warn"):
            raise BatteryConfigError(f"{where}: model.gates.{g}: on_insufficient must be block or warn")
        gates.append(ModelGate(g, _GATES[g], float(spec["max"]), int(spec.get("min_cells", 2)), spec.get("on_insufficient", "block")))
    bands = {k: (float(v[0]), float(v[1])) for k, v in (raw.get("temperature_bands_c") or {"all": [-100, 200]}).items()}
    deploy = raw.get("deploy") or {}
    return ModelSettings(feats, float(raw.get("ridge_alpha", 1.0)), float(raw.get("end_of_life_soh", 0.8)), bands, tuple(gates),
                         str(deploy.get("ecu", "bms")), float(deploy.get("parity_max_soh", 0.01)),
                         float(deploy.get("parity_max_rul_cycles", 10)))


@dataclass(frozen=True)
class DriftSettings:
    alpha: float = 0.01
    min_effect: float = 0.5
    min_samples: int = 12
    min_cells: int = 2
    cooldown_hours: float = 24.0


@dataclass(frozen=True)
class BatteryConfig:
    chemistries: dict[str, Chemistry]
    fleets: dict[str, FleetUsage]
    sei_activation_energy: float
    sei_rate_spread_log: float
    capacity_spread: float
    seed: int
    start_date: str
    profiles: dict[str, SimProfile]
    path: str
    model: ModelSettings | None = None
    drift: DriftSettings = field(default_factory=DriftSettings)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def fleet(self, fleet_id: str) -> FleetUsage:
        if fleet_id not in self.fleets:
            raise BatteryConfigError(f"{self.path}: no battery fleet {fleet_id!r} (have: {', '.join(self.fleets)})")
        return self.fleets[fleet_id]

    def chemistry_of(self, fleet_id: str) -> Chemistry:
        return self.chemistries[self.fleet(fleet_id).chemistry]

    def profile(self, name: str) -> SimProfile:
        if name not in self.profiles:
            raise BatteryConfigError(f"{self.path}: no simulation profile {name!r} (have: {', '.join(self.profiles)})")
        return self.profiles[name]

    def fleets_of(self, chemistry: str) -> list[str]:
        return [f.id for f in self.fleets.values() if f.chemistry == chemistry]


def _need(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise BatteryConfigError(f"{where}: missing {key!r}")
    return d[key]


def load_battery_config(path: str | Path | None = None) -> BatteryConfig:
    p = Path(path or os.environ.get(ENV_CONFIG) or project_root() / "config" / "battery.yaml")
    raw = yaml.safe_load(p.read_text()) or {}
    chems = {}
    for name, c in (_need(raw, "chemistries", str(p)) or {}).items():
        where = f"{p}: chemistries.{name}"
        lo, hi = (float(v) for v in _need(c, "window_v", where))
        if not (float(c["v_min"]) < lo < hi < float(c["v_max"])):
            raise BatteryConfigError(f"{where}: window_v must lie inside (v_min, v_max)")
        chems[name] = Chemistry(name, str(_need(c, "parameter_set", where)), float(_need(c, "rated_capacity_ah", where)),
                                float(c["v_min"]), float(c["v_max"]), float(_need(c, "sei_rate_constant", where)), (lo, hi),
                                c.get("sei_parameters_from"), float(c.get("peak_separation_v", 0.06)))
    fleets = {}
    for fid, f in (_need(raw, "fleets", str(p)) or {}).items():
        where = f"{p}: fleets.{fid}"
        validate_partition_key(fid, where)
        if f.get("kind") not in KINDS:
            raise BatteryConfigError(f"{where}: kind must be one of {KINDS}, got {f.get('kind')!r}")
        if f.get("chemistry") not in chems:
            raise BatteryConfigError(f"{where}: chemistry {f.get('chemistry')!r} is not in chemistries ({', '.join(chems)})")
        share, dod = float(f.get("fast_charge_share", 0)), float(f.get("depth_of_discharge", 0.8))
        if not (0 <= share <= 1 and 0 < dod <= 1):
            raise BatteryConfigError(f"{where}: fast_charge_share must be in [0, 1] and depth_of_discharge in (0, 1]")
        fleets[fid] = FleetUsage(fid, f["kind"], f["chemistry"], float(_need(f, "ambient_c", where)),
                                 float(f.get("temperature_spread_c", 1.0)), share, dod, float(f.get("cycles_per_day", 1.0)),
                                 int(f["units"]) if f.get("units") is not None else None)
    aging = raw.get("aging") or {}
    sim = raw.get("simulation") or {}
    profiles = {n: SimProfile(**v) for n, v in (sim.get("profiles") or {}).items()}
    return BatteryConfig(chems, fleets, float(aging.get("sei_activation_energy_j_mol", 37480.0)),
                         float(aging.get("sei_rate_spread_log", 0.25)), float(aging.get("capacity_spread", 0.02)),
                         int(sim.get("seed", 0)), str(sim.get("start_date", "2026-01-01")), profiles, str(p),
                         _model(raw.get("model") or {}, str(p)), _drift(raw.get("drift") or {}, str(p)), raw)


def _drift(raw: dict, where: str) -> DriftSettings:
    known = set(DriftSettings.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise BatteryConfigError(f"{where}: drift: unknown settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
    return DriftSettings(**{k: type(getattr(DriftSettings(), k))(v) for k, v in raw.items()})
