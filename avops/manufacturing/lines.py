"""``config/lines.yaml``: manufacturing lines, their inspection configuration and policy."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from avops.fleet_registry import project_root, validate_partition_key

ENV_LINES = "AVOPS_LINES"
CONFIG_FIELDS = ("part_variant", "camera", "lighting")  # what the line reports with every shift


@dataclass(frozen=True)
class LineGates:
    defect_recall_min_lb: float
    false_alarm_max_ub: float
    min_defects: int
    min_good: int


@dataclass(frozen=True)
class Line:
    id: str
    plant: str
    station: str
    defect: str  # weld | surface
    part_variant: str
    camera: dict
    lighting: dict
    defect_rate: float
    fp_rate_max: float
    fp_window_parts: int
    gates: LineGates

    def config(self) -> dict:
        return {k: getattr(self, k) for k in CONFIG_FIELDS}


def config_digest(config: dict) -> str:
    """Digest of a line configuration as a shift reports it (order-independent)."""
    return hashlib.sha256(json.dumps({k: config[k] for k in CONFIG_FIELDS}, sort_keys=True).encode()).hexdigest()[:16]


def config_changes(old: dict, new: dict) -> list[str]:
    """Human-readable differences, e.g. ``camera.y_px: 0 -> 5``."""
    out = []
    for k in CONFIG_FIELDS:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{f}: {a.get(f)} -> {b.get(f)}" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        elif a != b:
            out.append(f"{k}: {a} -> {b}")
    return out


@dataclass(frozen=True)
class LineRegistry:
    lines: tuple[Line, ...]
    simulation: dict
    path: Path

    def line(self, line_id: str) -> Line:
        for line in self.lines:
            if line.id == line_id:
                return line
        raise KeyError(f"{self.path}: no line {line_id!r} (have: {', '.join(l.id for l in self.lines)})")

    @property
    def line_ids(self) -> list[str]:
        return [line.id for line in self.lines]


def load_lines(path: str | Path | None = None) -> LineRegistry:
    p = Path(path or os.environ.get(ENV_LINES) or project_root() / "config" / "lines.yaml")
    raw = yaml.safe_load(p.read_text())
    lines = []
    for i, d in enumerate(raw.get("lines") or []):
        where = f"{p}: lines[{i}]"
        missing = [k for k in ("id", "plant", "defect", "part_variant", "camera", "lighting", "defect_rate", "gates") if k not in d]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        validate_partition_key(d["id"], where)
        if d["defect"] not in ("weld", "surface"):
            raise ValueError(f"{where}: defect must be weld or surface, got {d['defect']!r}")
        g = d["gates"]
        lines.append(Line(d["id"], d["plant"], d.get("station", ""), d["defect"], d["part_variant"], dict(d["camera"]),
                          dict(d["lighting"]), float(d["defect_rate"]), float(d.get("fp_rate_max", 0.35)),
                          int(d.get("fp_window_parts", 30)),
                          LineGates(float(g["defect_recall_min_lb"]), float(g["false_alarm_max_ub"]), int(g["min_defects"]),
                                    int(g.get("min_good", 50)))))
    ids = [l.id for l in lines]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{p}: duplicate line ids")
    return LineRegistry(tuple(lines), dict(raw.get("simulation") or {}), p)
