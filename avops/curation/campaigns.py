"""Collection campaigns: ask the fleet for more of what the curated set lacks.

A campaign names a cohort, the ODD conditions to collect (as slice filters with the
same ISO 34503 names as the drive logs) and target sample counts. Vehicles (here the
simulator) log drives while those conditions hold; the next curation round shows
whether coverage of the targeted slices rose.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avops.curation.policy import Slice
from avops.store import atomic_write_json


@dataclass(frozen=True)
class CampaignTarget:
    slice: str
    where: dict
    have: int
    target: int


@dataclass(frozen=True)
class Campaign:
    id: str
    cohort: str
    targets: tuple[CampaignTarget, ...]
    drives_per_vehicle: int
    source: dict = field(default_factory=dict)  # what it was derived from (curated set digest, run id)
    edge_cases: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": [asdict(t) for t in self.targets], "edge_cases": list(self.edge_cases)}

    @classmethod
    def from_dict(cls, d: dict) -> Campaign:
        try:
            return cls(
                id=d["id"],
                cohort=d["cohort"],
                targets=tuple(CampaignTarget(**t) for t in d["targets"]),
                drives_per_vehicle=int(d["drives_per_vehicle"]),
                source=dict(d.get("source", {})),
                edge_cases=tuple(d.get("edge_cases", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a campaign spec: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> Campaign:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, folder: Path) -> Path:
        path = folder / self.cohort / f"{self.id}.json"
        atomic_write_json(path, self.to_dict())
        return path


def plan_campaign(
    cohort: str,
    coverage: dict[str, int],
    slices: tuple[Slice, ...],
    max_targets: int = 2,
    drives_per_vehicle: int = 1,
    edge_cases: list[dict] | None = None,
    source: dict | None = None,
    content_key: str | None = None,
) -> Campaign | None:
    """Target the slices furthest below their target (relative gap); None when all are covered.

    The id (and so the campaign drives' times and seeds) hashes ``content_key`` (the digest of the
    selection it was planned from) rather than ``source``, whose manifest digests carry a
    publication time: the same data plans the same campaign on every run.
    """
    gaps = []
    for s in slices:
        have = coverage.get(s.name, 0)
        if s.target_samples > 0 and have < s.target_samples:
            gaps.append((1 - have / s.target_samples, s, have))
    if not gaps:
        return None
    gaps.sort(key=lambda g: (-g[0], g[1].name))
    targets = tuple(CampaignTarget(s.name, dict(s.where), have, s.target_samples) for _, s, have in gaps[:max_targets])
    body = json.dumps([cohort, [asdict(t) for t in targets], drives_per_vehicle, content_key if content_key is not None else source or {}],
                      sort_keys=True, default=str)
    cid = f"campaign-{hashlib.sha256(body.encode()).hexdigest()[:12]}"
    return Campaign(cid, cohort, targets, drives_per_vehicle, dict(source or {}), tuple(edge_cases or ()))
