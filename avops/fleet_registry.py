"""The fleet registry (``config/fleet.yaml``): cohorts, their hardware and CAN databases.

It is data that fleet engineers edit, so every problem is reported with the file
and the field that is wrong instead of a KeyError deep inside a pipeline.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_FLEET = "AVOPS_FLEET_REGISTRY"
FORBIDDEN_KEY_CHARS = set(",|/")
LOGGER_FORMATS = ("mcap", "blf", "asc", "mf4")
COHORT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class RegistryError(ValueError):
    """The fleet registry file is invalid; the message names the file and field."""


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_registry_path() -> Path:
    return Path(os.environ.get(ENV_FLEET) or project_root() / "config" / "fleet.yaml")


@dataclass(frozen=True)
class Ecu:
    name: str
    hardware_id: str
    firmware: str
    soc: str | None = None  # the SoC catalog entry models for this ECU are compiled for (adas_domain: the cohort's soc)


@dataclass(frozen=True)
class Cohort:
    """Vehicles that share platform, model year, SoC and region: one Dagster partition."""

    id: str
    platform: str
    model_year: int
    soc: str
    region: str
    vehicle_count: int
    dbc: str
    powertrain_calibration: str
    loggers: tuple[str, ...]
    ecus: tuple[Ecu, ...]
    base_dir: Path = field(default_factory=Path.cwd, compare=False, repr=False)

    @property
    def dbc_spec(self) -> str:
        """The DBC as ``opendbc:<name>`` or an absolute path (relative paths resolve against the registry file)."""
        if self.dbc.startswith("opendbc:") or Path(self.dbc).is_absolute():
            return self.dbc
        return str((self.base_dir / self.dbc).resolve())

    def ecu(self, name: str) -> Ecu | None:
        return next((e for e in self.ecus if e.name == name), None)

    def soc_of(self, ecu: str) -> str | None:
        """The SoC an ECU's models are compiled for: the cohort's own for the ADAS domain controller."""
        e = self.ecu(ecu)
        if e is None:
            return None
        return e.soc or (self.soc if e.name == "adas_domain" else None)

    def vehicle_ids(self) -> list[str]:
        """Pseudonymous, stable vehicle ids (no VINs leave the registry)."""
        return [f"{self.id}-v{i:03d}" for i in range(self.vehicle_count)]

    def logger_for(self, vehicle_index: int) -> str:
        return self.loggers[vehicle_index % len(self.loggers)]


@dataclass(frozen=True)
class FleetRegistry:
    path: Path
    cohorts: tuple[Cohort, ...]
    simulation: dict[str, Any]

    def cohort(self, cohort_id: str) -> Cohort:
        for c in self.cohorts:
            if c.id == cohort_id:
                return c
        known = ", ".join(c.id for c in self.cohorts)
        raise RegistryError(f"{self.path}: unknown cohort {cohort_id!r} (known: {known}); add it to the registry first")

    @property
    def cohort_ids(self) -> list[str]:
        return [c.id for c in self.cohorts]


def validate_partition_key(key: str, where: str) -> None:
    bad = FORBIDDEN_KEY_CHARS & set(key)
    if bad:
        raise RegistryError(f"{where}: {key!r} contains {''.join(sorted(bad))!r}; partition keys may not contain , | /")
    if not COHORT_ID.match(key):
        raise RegistryError(f"{where}: {key!r} must be lower-case letters, digits, '.', '_' or '-'")


def _req(d: dict, key: str, where: str, typ: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise RegistryError(f"{where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, typ):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise RegistryError(f"{where}: field {key!r} must be {names}, got {value!r}")
    return value


def _cohort(d: Any, where: str, base_dir: Path) -> Cohort:
    if not isinstance(d, dict):
        raise RegistryError(f"{where}: each cohort must be a mapping, got {d!r}")
    cid = str(_req(d, "id", where, str))
    where = f"{where} ({cid})"
    validate_partition_key(cid, where)
    loggers = tuple(_req(d, "loggers", where, list))
    for fmt in loggers:
        if fmt not in LOGGER_FORMATS:
            raise RegistryError(f"{where}: logger {fmt!r} is not one of {', '.join(LOGGER_FORMATS)}")
    if not loggers:
        raise RegistryError(f"{where}: loggers must name at least one format")
    ecus = []
    for i, e in enumerate(_req(d, "ecus", where, list)):
        ew = f"{where} ecus[{i}]"
        if not isinstance(e, dict):
            raise RegistryError(f"{ew}: must be a mapping")
        soc = e.get("soc")
        if soc is not None and not isinstance(soc, str):
            raise RegistryError(f"{ew}: field 'soc' must be a SoC id from config/socs.yaml, got {soc!r}")
        ecus.append(Ecu(str(_req(e, "name", ew, str)), str(_req(e, "hardware_id", ew, str)), str(_req(e, "firmware", ew, (str, int, float))),
                        soc))
    count = _req(d, "vehicle_count", where, int)
    if count < 1:
        raise RegistryError(f"{where}: vehicle_count must be at least 1")
    return Cohort(
        id=cid,
        platform=str(_req(d, "platform", where, str)),
        model_year=int(_req(d, "model_year", where, int)),
        soc=str(_req(d, "soc", where, str)),
        region=str(_req(d, "region", where, str)),
        vehicle_count=count,
        dbc=str(_req(d, "dbc", where, str)),
        powertrain_calibration=str(_req(d, "powertrain_calibration", where, str)),
        loggers=loggers,
        ecus=tuple(ecus),
        base_dir=base_dir,
    )


def load_registry(path: Path | str | None = None) -> FleetRegistry:
    path = Path(path) if path is not None else default_registry_path()
    if not path.exists():
        raise RegistryError(f"fleet registry {path} does not exist; set {ENV_FLEET} or create config/fleet.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("cohorts"), list):
        raise RegistryError(f"{path}: expected a mapping with a 'cohorts' list")
    cohorts = tuple(_cohort(c, f"{path}: cohorts[{i}]", path.parent) for i, c in enumerate(raw["cohorts"]))
    ids = [c.id for c in cohorts]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise RegistryError(f"{path}: duplicate cohort ids {dupes}")
    return FleetRegistry(path=path.resolve(), cohorts=cohorts, simulation=dict(raw.get("simulation") or {}))
