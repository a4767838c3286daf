"""The SoC catalog (``config/socs.yaml``): what each hardware target can run, and within which budgets.

Model years pin toolchain versions: an engine compiled with TensorRT 10.3 does not load on a car
whose ECU runs 8.6, so compatibility is decided per cohort, not per SoC family.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from avops.fleet_registry import project_root

ENV_SOCS = "AVOPS_SOC_CATALOG"
PRECISIONS = ("fp32", "fp16", "int8")
REQUIRED = ("precisions", "toolchain", "toolchain_versions", "opset", "memory_budget_mb", "latency_budget_ms")


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class Soc:
    id: str
    name: str
    vendor: str
    architecture: str
    accelerator: str
    precisions: tuple[str, ...]
    toolchain: str
    toolchain_versions: tuple[str, ...]
    toolchain_by_model_year: dict
    opset: tuple[int, int]
    memory_budget_mb: float
    latency_budget_ms: float
    host_scaling: float | None = None  # target latency ~= host latency x this (None: must be measured on target)

    def toolchain_version(self, model_year: int) -> str:
        """The toolchain version vehicles of ``model_year`` run: the newest pinned year not after it."""
        years = sorted(int(y) for y in self.toolchain_by_model_year if int(y) <= model_year)
        return str(self.toolchain_by_model_year[years[-1]]) if years else self.toolchain_versions[-1]

    def spec(self) -> dict:
        return {"soc": self.id, "name": self.name, "architecture": self.architecture, "accelerator": self.accelerator,
                "toolchain": self.toolchain, "opset": list(self.opset), "precisions": list(self.precisions),
                "memory_budget_mb": self.memory_budget_mb, "latency_budget_ms": self.latency_budget_ms}


def load_catalog(path: str | Path | None = None) -> dict[str, Soc]:
    p = Path(path or os.environ.get(ENV_SOCS) or project_root() / "config" / "socs.yaml")
    raw = yaml.safe_load(p.read_text()) or {}
    out = {}
    for sid, s in (raw.get("socs") or {}).items():
        missing = [k for k in REQUIRED if k not in s]
        if missing:
            raise CatalogError(f"{p}: SoC {sid!r} lacks {missing}")
        bad = [x for x in s["precisions"] if x not in PRECISIONS]
        if bad:
            raise CatalogError(f"{p}: SoC {sid!r} has unknown precision(s) {bad}; use {', '.join(PRECISIONS)}")
        lo, hi = (int(v) for v in s["opset"])
        if lo > hi:
            raise CatalogError(f"{p}: SoC {sid!r} opset range {s['opset']} is empty")
        pins = {int(y): str(v) for y, v in (s.get("toolchain_by_model_year") or {}).items()}
        unknown = sorted({v for v in pins.values()} - {str(v) for v in s["toolchain_versions"]})
        if unknown:
            raise CatalogError(f"{p}: SoC {sid!r} pins toolchain version(s) {unknown} not in toolchain_versions")
        out[sid] = Soc(sid, s.get("name", sid), s.get("vendor", ""), s.get("architecture", ""), s.get("accelerator", ""),
                       tuple(s["precisions"]), s["toolchain"], tuple(str(v) for v in s["toolchain_versions"]), pins, (lo, hi),
                       float(s["memory_budget_mb"]), float(s["latency_budget_ms"]),
                       float(s["host_scaling"]) if s.get("host_scaling") is not None else None)
    if not out:
        raise CatalogError(f"{p}: no SoCs under `socs:`")
    return out
