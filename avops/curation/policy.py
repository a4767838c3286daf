"""The data-engine policy (``config/curation.yaml``) and ODD slice membership."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from avops.fleet_registry import project_root

SLICE_FLAGS = ("night", "fog", "snow", "rain", "roadworks", "vru")


@dataclass(frozen=True)
class Slice:
    name: str
    where: dict
    min_samples: int
    target_samples: int

    def mask(self, df: pd.DataFrame) -> pd.Series:
        """Rows of ``df`` (with ODD columns and ``has_vru``) that belong to this slice."""
        return where_mask(df, self.where, self.name)


def where_mask(df: pd.DataFrame, where: dict, name: str) -> pd.Series:
    """Rows matching every ``column: value`` of a slice filter (shared by curation and the safety gates)."""
    m = pd.Series(True, index=df.index)
    for col, value in where.items():
        if col not in df:
            raise KeyError(f"slice {name!r} filters on {col!r}, which the table does not have")
        m &= df[col] == value
    return m


@dataclass(frozen=True)
class CurationPolicy:
    raw: dict
    slices: tuple[Slice, ...]

    @property
    def selection(self) -> dict:
        return self.raw["selection"]

    @property
    def teacher(self) -> dict:
        return self.raw["teacher"]

    @property
    def splits(self) -> dict:
        return self.raw["splits"]

    @property
    def review(self) -> dict:
        return self.raw.get("review", {})


ENV_POLICY = "AVOPS_CURATION_POLICY"


def load_policy(path: str | None = None) -> CurationPolicy:
    """The policy at ``path``, ``$AVOPS_CURATION_POLICY`` or ``config/curation.yaml``."""
    return _load(str(path or os.environ.get(ENV_POLICY) or project_root() / "config" / "curation.yaml"))


@lru_cache(maxsize=8)
def _load(path: str) -> CurationPolicy:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"curation policy {p} does not exist; set {ENV_POLICY} or create config/curation.yaml")
    raw = yaml.safe_load(p.read_text())
    slices = tuple(Slice(n, dict(s["where"]), int(s.get("min_samples", 0)), int(s.get("target_samples", 0))) for n, s in raw["slices"].items())
    return CurationPolicy(raw, slices)


def quota_mask(df: pd.DataFrame, name: str) -> pd.Series:
    """The rare-slice quotas of selection, by name."""
    if name in ("night",):
        return df["illumination"] == "night"
    if name in ("fog", "snow", "rain"):
        return df["weather"] == name
    if name == "roadworks":
        return df["roadworks"].astype(bool)
    if name == "vru":
        return df["has_vru"].astype(bool)
    raise KeyError(f"unknown quota slice {name!r}; use one of {', '.join(SLICE_FLAGS)}")


def coverage(df: pd.DataFrame, slices: tuple[Slice, ...]) -> dict[str, int]:
    return {s.name: int(s.mask(df).sum()) for s in slices}
