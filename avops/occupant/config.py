"""``config/occupant.yaml``: driver states, evaluation slices, the federation and its privacy budget, gates."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from avops.fleet_registry import project_root

ENV_CONFIG = "AVOPS_OCCUPANT_CONFIG"


class OccupantConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DpConfig:
    max_grad_norm: float
    noise_multiplier: float
    delta: float
    max_epsilon: float


@dataclass(frozen=True)
class FederationConfig:
    cohorts: tuple[str, ...]
    rounds: int
    max_rounds: int
    min_participants: int
    round_timeout_s: float
    local_epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    aggregation: str
    dp: DpConfig
    secure_aggregation: bool = False  # SecAgg+ (Flower): the cloud learns only the sum of the updates


@dataclass(frozen=True)
class SimConfig:
    frame_size: int
    vehicles_per_cohort: int
    frames_per_vehicle: int
    state_concentration: float
    eval_vehicles: int
    eval_frames_per_vehicle: int
    studio_sessions: int
    studio_frames_per_session: int
    studio_epochs: int
    seed: int


@dataclass(frozen=True)
class GateConfig:
    metric: str
    overall_min: float
    slice_min: float
    max_gap: float
    min_samples: int


@dataclass(frozen=True)
class OccupantConfig:
    path: Path
    states: tuple[str, ...]
    slices: dict[str, tuple[str, ...]]
    simulator: SimConfig
    federated: FederationConfig
    gates: GateConfig
    ecu: str
    parity_min_agreement: float

    def round_keys(self) -> list[str]:
        return [round_key(i) for i in range(1, self.federated.max_rounds + 1)]


def round_key(number: int) -> str:
    return f"r{number:03d}"


def round_number(key: str) -> int:
    if len(key) != 4 or key[0] != "r" or not key[1:].isdigit():
        raise ValueError(f"not a federated round key: {key!r} (expected r001, r002, ...)")
    return int(key[1:])


def _need(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise OccupantConfigError(f"{where}: missing {key!r}")
    return d[key]


def load_occupant_config(path: Path | str | None = None) -> OccupantConfig:
    path = Path(path or os.environ.get(ENV_CONFIG) or project_root() / "config" / "occupant.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OccupantConfigError(f"{path}: cannot read: {exc}") from exc
    where = str(path)
    sim, fed, gates, deploy = (_need(raw, k, where) for k in ("simulator", "federated", "gates", "deploy"))
    dp = _need(fed, "dp", f"{where}: federated")
    if fed.get("aggregation", "fedavg") not in ("fedavg", "trimmed"):
        raise OccupantConfigError(f"{where}: federated.aggregation must be fedavg or trimmed, not {fed.get('aggregation')!r}")
    if fed.get("secure_aggregation") and fed.get("aggregation", "fedavg") != "fedavg":
        raise OccupantConfigError(f"{where}: federated.secure_aggregation sums masked updates, so only aggregation: fedavg is "
                                  "possible with it (a trimmed mean needs every update in the clear)")
    cfg = OccupantConfig(
        path=path, states=tuple(_need(raw, "states", where)),
        slices={k: tuple(v) for k, v in _need(raw, "slices", where).items()},
        simulator=SimConfig(**{k: sim[k] for k in SimConfig.__dataclass_fields__}),
        federated=FederationConfig(
            cohorts=tuple(fed["cohorts"]), rounds=int(fed["rounds"]), max_rounds=int(fed["max_rounds"]),
            min_participants=int(fed["min_participants"]), round_timeout_s=float(fed["round_timeout_s"]),
            local_epochs=int(fed["local_epochs"]), batch_size=int(fed["batch_size"]), learning_rate=float(fed["learning_rate"]), momentum=float(fed.get("momentum", 0.0)),
            aggregation=fed.get("aggregation", "fedavg"), dp=DpConfig(**{k: float(dp[k]) for k in DpConfig.__dataclass_fields__}),
            secure_aggregation=bool(fed.get("secure_aggregation", False))),
        gates=GateConfig(metric=gates.get("metric", "accuracy"), overall_min=float(gates["overall_min"]), slice_min=float(gates["slice_min"]),
                         max_gap=float(gates["max_gap"]), min_samples=int(gates["min_samples"])),
        ecu=_need(deploy, "ecu", f"{where}: deploy"), parity_min_agreement=float(deploy.get("parity_min_agreement", 0.97)))
    if cfg.federated.min_participants < 1 or cfg.federated.rounds > cfg.federated.max_rounds:
        raise OccupantConfigError(f"{where}: need min_participants >= 1 and rounds <= max_rounds")
    return cfg
