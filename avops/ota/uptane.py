"""Uptane's two repositories for avops: one image repository and a director repository per cohort.

* **Image repository** (``ota/image``): root and targets keys are offline and threshold-signed;
  each component and SoC has its own delegated, terminating role (``perception-orin`` signs
  ``perception/orin/*`` and nothing else), whose key is the build pipeline's.
* **Director repository** (``ota/director/<cohort>``): an online key signs, per cohort, what
  each ECU should install, with custom fields the vehicle checks: ECU identifier, hardware id,
  release counter (never lower than installed) and rollout id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from avops.home import HomeLayout
from avops.ota.keys import KeyRing
from avops.ota.repository import FileRepository
from avops.store import sha256_bytes


def ota_root(home: HomeLayout) -> Path:
    return home.root / "ota"


def release_log(home: HomeLayout, cohort: str) -> Path:
    """The cohort's release log: one JSON line per release and rollback (append-only)."""
    return ota_root(home) / "releases" / f"{cohort}.jsonl"


def release_history(home: HomeLayout, cohort: str) -> list[dict]:
    log = release_log(home, cohort)
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def role_for(component: str, soc: str) -> str:
    return f"{component}-{soc}"


def target_path(component: str, soc: str, name: str) -> str:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"target file name {name!r} must be a plain file name")
    return f"{component}/{soc}/{name}"


def metadata_state(home: HomeLayout) -> dict[str, tuple[int, str]]:
    """Every role of every repository (``image/targets``, ``director/<cohort>/snapshot``...): its latest version and sha256.

    Taken before and after an operation, it shows exactly which metadata the operation re-signed
    (a rollback must touch one director's targets, snapshot and timestamp, and nothing else).
    """
    out: dict[str, tuple[int, str]] = {}
    base = ota_root(home)
    folders = [("image", base / "image" / "metadata")]
    if (base / "director").exists():
        folders += [(f"director/{d.name}", d / "metadata") for d in sorted((base / "director").iterdir()) if d.is_dir()]
    for name, folder in folders:
        if not folder.exists():
            continue
        latest: dict[str, tuple[int, Path]] = {}
        for p in folder.iterdir():
            parts = p.name.split(".")
            if p.name == "timestamp.json":
                role, version = "timestamp", int(json.loads(p.read_bytes())["signed"]["version"])
            elif len(parts) == 3 and parts[0].isdigit() and parts[2] == "json":
                role, version = parts[1], int(parts[0])
            else:
                continue
            if role not in latest or version > latest[role][0]:
                latest[role] = (version, p)
        for role, (version, p) in sorted(latest.items()):
            out[f"{name}/{role}"] = (version, sha256_bytes(p.read_bytes()))
    return out


@dataclass(frozen=True)
class Release:
    path: str
    sha256: str
    length: int
    release_counter: int
    rollout_id: str
    ecu_identifier: str
    hardware_id: str


class Uptane:
    def __init__(self, home: HomeLayout) -> None:
        self.root = ota_root(home)
        self.keys = KeyRing(self.root / "keys")

    def image(self) -> FileRepository:
        repo = FileRepository(self.root / "image", self.keys, "image")
        if not repo.exists():
            repo.init(root_keys=2, root_threshold=2, targets_keys=2, targets_threshold=2)
        return repo

    def director(self, cohort: str) -> FileRepository:
        repo = FileRepository(self.root / "director" / cohort, self.keys, f"director-{cohort}")
        if not repo.exists():
            repo.init(root_keys=2, root_threshold=2, targets_keys=1, targets_threshold=1)
        return repo

    def assigned(self, cohort: str, component: str, ecu_identifier: str) -> list:
        """The director's entries for ``component`` on one ECU of the cohort (at most one after any release)."""
        return [t for t in self.director(cohort).targets().targets.values()
                if t.unrecognized_fields.get("custom", {}).get("ecu_identifier") == ecu_identifier and t.path.startswith(f"{component}/")]

    def ensure_role(self, component: str, soc: str) -> str:
        image = self.image()
        role = role_for(component, soc)
        delegations = image.targets().delegations
        if delegations is None or role not in (delegations.roles or {}):
            image.delegate(role, [f"{component}/{soc}/*"])
        return role

    def release(self, cohort: str, component: str, soc: str, name: str, data: bytes, ecu_identifier: str, hardware_id: str,
                rollout_id: str, image_custom: dict | None = None) -> Release:
        """Sign ``data`` into the image repository (its component/SoC role) and direct the cohort's ECU to it."""
        path = target_path(component, soc, name)
        role = self.ensure_role(component, soc)
        image = self.image()
        existing = image.targets(role).targets.get(path)
        if existing is not None and existing.hashes.get("sha256") != sha256_bytes(data):
            raise ValueError(f"the image repository already holds other bytes at {path}: image targets are immutable "
                             "(directors elsewhere point at them); name a new image by its digest")
        # the same image may serve several cohorts' ECUs: the hardware it is allowed on only ever grows
        allowed = sorted({hardware_id, *((existing.unrecognized_fields.get("custom", {}).get("hardware_ids") or []) if existing else [])})
        image.add_target(path, data, role=role, custom={"hardware_ids": allowed, **(image_custom or {})})
        image.publish()
        director = self.director(cohort)
        previous = self.assigned(cohort, component, ecu_identifier)
        counter = max((int(t.unrecognized_fields["custom"]["release_counter"]) for t in previous), default=0) + 1
        custom = {"ecu_identifier": ecu_identifier, "hardware_id": hardware_id, "release_counter": counter, "rollout_id": rollout_id}
        # one image per ECU and component: the previous one is replaced in the same signed version
        t = director.add_target(path, data, custom=custom, replaces=tuple(p.path for p in previous if p.path != path))
        director.publish()
        return Release(path, t.hashes["sha256"], t.length, counter, rollout_id, ecu_identifier, hardware_id)
