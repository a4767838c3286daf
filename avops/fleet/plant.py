"""The simulated factory: AOI images per manufacturing line, and the rework station's verdicts.

Each shift, a line's AOI camera photographs every part (a 32 px grey image of a weld seam or a
painted surface) with the line's *current* configuration: the part variant sets the surface
texture, the camera pose where the seam sits, the lighting the brightness field. The station
scores each part with the model deployed to it (the caller passes it; none before the first
model) and flags parts above 0.5. Flagged parts go to the rework station, which confirms the
defect or overturns the flag; a quality auditor also labels a share of all parts (every part of
the first shift after a configuration change). Those verdicts reach the backend hours later.
Ground truth (which parts are defective, and how) goes to ``sim_truth/lines/``.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from avops.home import HomeLayout
from avops.manufacturing.lines import Line, config_digest
from avops.store import atomic_write_bytes, atomic_write_json, sha256_bytes

REWORK_COLUMNS = ["part_id", "shift_id", "station", "outcome", "recorded_at"]
Inspector = Callable[[np.ndarray], np.ndarray]  # (n, px, px) uint8 -> scores in [0, 1]


@dataclass
class ShiftResult:
    line: str
    shift_id: str
    parts: int
    defects: int
    flagged: int
    false_alarms: int
    audited: int
    folder: Path


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def render_part(rng: np.random.Generator, line: Line, config: dict, px: int, defect: str | None) -> np.ndarray:
    """One AOI image: texture (variant), seam or panel (camera pose), brightness field (lighting), a defect."""
    yy, xx = np.mgrid[0:px, 0:px].astype(float)
    v = _seed(config["part_variant"]) % 1000 / 1000
    texture = 0.05 * np.sin(xx * (0.6 + v) + yy * (0.3 + v / 2)) + rng.normal(0, 0.035, (px, px))
    cam = config["camera"]
    angle = math.radians(float(cam.get("angle_deg", 0)))
    cy, cx = px / 2 + float(cam.get("y_px", 0)), px / 2 + float(cam.get("x_px", 0))
    across = (yy - cy) * math.cos(angle) - (xx - cx) * math.sin(angle)  # distance across the seam
    along = (yy - cy) * math.sin(angle) + (xx - cx) * math.cos(angle)
    light = config["lighting"]
    kind, intensity = light.get("kind", "dome"), float(light.get("intensity", 1.0))
    r = np.hypot(yy - px / 2, xx - px / 2)
    field = {"dome": np.ones((px, px)), "ring": 1.15 - 0.5 * r / px, "bar": 0.75 + 0.5 * xx / px,
             # a cracked diffuser: a hot spot where the lamp shines through (a condition, not a configuration)
             "hotspot": 0.7 + 0.9 * np.exp(-((yy - px / 3) ** 2 + (xx - px / 3) ** 2) / (px / 5) ** 2)}.get(kind, np.ones((px, px)))
    if line.defect == "weld":
        base = 0.35 + 0.35 * np.exp(-(across / 2.2) ** 2)  # a bright bead on darker sheet metal
    else:
        base = np.full((px, px), 0.55) + 0.04 * np.tanh(across / 6)  # a painted panel with a soft reflection
    img = base + texture
    if defect is not None:
        t = rng.uniform(-px / 3, px / 3)  # where along the seam
        if defect == "porosity":
            for _ in range(int(rng.integers(2, 4))):
                a = t + rng.normal(0, 2.5)
                y, x = cy + a * math.sin(angle), cx + a * math.cos(angle)
                img -= 0.45 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 1.6)
        elif defect == "crack":
            img -= 0.3 * np.exp(-((along - t) / 0.8) ** 2) * (np.abs(across) < 5)
        elif defect == "spatter":
            for _ in range(int(rng.integers(3, 6))):
                y, x = cy + rng.uniform(-8, 8), cx + rng.uniform(-12, 12)
                img += 0.35 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 1.2)
        else:  # surface: crater (dark ring), inclusion (dark dot), run (vertical streak)
            y, x = rng.uniform(6, px - 6), rng.uniform(6, px - 6)
            r = np.hypot(yy - y, xx - x)
            img += {"crater": -0.3 * np.exp(-((r - 2.5) / 0.9) ** 2), "inclusion": -0.35 * np.exp(-(r / 1.3) ** 2),
                    "run": -0.22 * np.exp(-((xx - x) / 1.1) ** 2) * (np.abs(yy - y) < 7)}[defect]
    return np.clip(img * field * intensity * 255, 0, 255).astype(np.uint8)


DEFECTS = {"weld": ("porosity", "crack", "spatter"), "surface": ("crater", "inclusion", "run")}


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def simulate_shift(home: HomeLayout, line: Line, shift_index: int, simulation: dict, config: dict | None = None,
                   inspector: Inspector | None = None, inspector_version: int | None = None, ramp_up: bool = False,
                   condition: dict | None = None) -> ShiftResult:
    """One shift of ``line`` with ``config`` (default: the line's configuration), scored by ``inspector``.

    ``condition`` changes what the camera sees without being reported (an ageing lamp, a dirty
    lens): the shift still reports ``config``, as a real line would.
    """
    config = config or line.config()
    seen = {**config, **(condition or {})}
    px = int(simulation.get("image_px", 32))
    n = int(simulation.get("parts_per_shift", 240))
    start = datetime.fromisoformat(str(simulation.get("start", "2026-11-02T06:00:00+00:00"))) + timedelta(hours=8 * shift_index)
    shift_id = f"{line.id}-s{shift_index:04d}"
    seed = int(simulation.get("seed", 0))
    rng = np.random.default_rng([seed, _seed(line.id, shift_index, config_digest(config))])
    kinds = DEFECTS[line.defect]
    truth, images, parts = [], [], []
    for i in range(n):
        defect = str(rng.choice(kinds)) if rng.random() < line.defect_rate else None
        images.append(render_part(rng, line, seen, px, defect))
        when = start + timedelta(seconds=i * 8 * 3600 / n)
        parts.append({"part_id": f"{shift_id}-p{i:04d}", "serial": f"{line.plant[:3].upper()}{seed % 97:02d}{shift_index:04d}{i:04d}",
                      "time": when.isoformat()})
        truth.append({"part_id": parts[-1]["part_id"], "defect": defect})
    scores = inspector(np.stack(images)) if inspector is not None else None
    folder = home.plant / "aoi" / line.id / shift_id
    for p, img, k in zip(parts, images, range(n)):
        data = _png(img)
        atomic_write_bytes(folder / "images" / f"{p['part_id']}.png", data)
        p["image"] = f"images/{p['part_id']}.png"
        p["sha256"] = sha256_bytes(data)
        if scores is not None:
            p["aoi_score"] = round(float(scores[k]), 6)
            p["aoi_flag"] = bool(scores[k] >= 0.5)
    # the landing protocol: shift.json appears last, so a half-delivered shift is never read
    atomic_write_json(folder / "shift.json", {"line": line.id, "shift_id": shift_id, "start": start.isoformat(),
                                             "line_config": config, "config_digest": config_digest(config),
                                             "inspector_version": inspector_version if scores is not None else None,
                                             "parts": parts})
    atomic_write_json(home.sim_truth / "lines" / line.id / f"{shift_id}.json", {"parts": truth})
    # rework station (flagged parts) and quality audit (a share of all parts), recorded hours later
    lo, hi = simulation.get("rework_delay_hours", [1, 20])
    share = float(simulation.get("ramp_up_audit_share" if ramp_up else "audit_share", 1.0 if ramp_up else 0.25))
    rows, flagged, false_alarms, audited = [], 0, 0, 0
    for p, t in zip(parts, truth):
        recorded = (datetime.fromisoformat(p["time"]) + timedelta(hours=float(rng.uniform(lo, hi)))).isoformat()
        if p.get("aoi_flag"):
            flagged += 1
            false_alarms += t["defect"] is None
            rows.append([p["part_id"], shift_id, "rework", "confirmed_defect" if t["defect"] else "overturned", recorded])
        elif rng.random() < share:
            audited += 1
            rows.append([p["part_id"], shift_id, "audit", "audit_defect" if t["defect"] else "audit_ok", recorded])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REWORK_COLUMNS)
    w.writerows(sorted(rows, key=lambda r: (r[4], r[0])))
    atomic_write_bytes(home.plant / "rework" / line.id / f"{shift_id}.csv", buf.getvalue().encode())
    return ShiftResult(line.id, shift_id, n, sum(t["defect"] is not None for t in truth), flagged, false_alarms, audited, folder)
