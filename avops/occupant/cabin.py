"""Simulated in-cabin infrared frames, each vehicle's own cabin store, and the consenting test pool.

A frame is a small single-channel image (uint8, IR-like) of the driver, rendered from a driver
state (attentive, looking away, phone use, drowsy) and the occupant attributes the evaluation
slices are made of: age band, eyewear, face covering, seating position, illumination. Every
vehicle has its own driver(s) and habits, so the data differs from vehicle to vehicle (non-IID),
as in a real fleet. Fleet vehicles keep their frames in their own store (``vehicles/<cohort>/<vehicle>/cabin``),
which stands for the car's storage: nothing in the cloud reads it except the vehicle-side half of
the no-upload audit. Consenting test vehicles deliver theirs to ``landing/cabin_consented``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avops.occupant.config import OccupantConfig
from avops.store import atomic_write_bytes, sha256_bytes

ATTRIBUTES = ("age_band", "eyewear", "face_covering", "seating", "illumination")
FRAMES_FILE = "frames.npz"


class CabinDataError(ValueError):
    """A cabin frame file that cannot be used: names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# rendering


def render(state: str, attrs: dict[str, str], rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One IR-like frame (uint8, size x size) of a driver in ``state`` with occupant ``attrs``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    illum = attrs["illumination"]
    bg = {"day": 0.42, "night_ir": 0.07, "low_sun": 0.40}[illum] + rng.normal(0, 0.03)
    img = np.full((size, size), bg, np.float32)
    face_level = {"day": 0.66, "night_ir": 0.80, "low_sun": 0.70}[illum] + rng.normal(0, 0.03)
    scale = 0.82 if attrs["seating"] == "reclined" else 1.0
    cx = 0.5 + rng.normal(0, 0.025) + (0.05 if attrs["seating"] == "reclined" else 0.0)
    cy = 0.45 + rng.normal(0, 0.025) + (0.06 if attrs["seating"] == "reclined" else 0.0)
    yaw = 0.0
    if state == "looking_away":
        yaw = rng.choice([-1.0, 1.0]) * rng.uniform(0.13, 0.18)
    rx, ry = 0.22 * scale, 0.29 * scale
    face = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    img[face] = face_level
    if attrs["age_band"] == "61+":  # skin texture: fine horizontal lines
        img[face] += 0.05 * np.sin(yy[face] * size * 1.7 + rng.uniform(0, 6.28)).astype(np.float32)
    # eyes: centred on the face, or turned away with the head
    ex = cx + yaw
    ey = cy - 0.06 * scale
    eye_dx = 0.085 * scale * (1.0 - 2.2 * abs(yaw))
    opening = {"drowsy": 0.008}.get(state, 0.05 if attrs["age_band"] != "61+" else 0.04) * scale
    for sx in (-1, 1):
        x0 = ex + sx * eye_dx
        if attrs["eyewear"] == "sunglasses":  # the lens hides the eye; an open eye still shows the IR illuminator's corneal glint
            lens = ((xx - x0) / (0.075 * scale)) ** 2 + ((yy - ey) / (0.065 * scale)) ** 2 <= 1.0
            img[lens] = 0.20
            if state != "drowsy":
                gx, gy = int(round(x0 * (size - 1))), int(round(ey * (size - 1)))
                img[max(gy - 1, 0):gy + 1, max(gx - 1, 0):gx + 1] = 0.85
        else:
            eye = ((xx - x0) / (0.055 * scale)) ** 2 + ((yy - ey) / opening) ** 2 <= 1.0
            img[eye] = 0.08
            if attrs["eyewear"] == "glasses":
                ring = np.abs(np.sqrt(((xx - x0) / (0.065 * scale)) ** 2 + ((yy - ey) / (0.05 * scale)) ** 2) - 1.0) < 0.22
                img[ring] = 0.35
    # nose and mouth turn with the head
    nose = (np.abs(xx - (cx + 0.6 * yaw)) < 0.015) & (yy > cy) & (yy < cy + 0.08 * scale)
    img[nose] -= 0.12
    if attrs["face_covering"] == "mask":
        cover = face & (yy > cy + 0.03 * scale)
        img[cover] = 0.55 + 0.03 * np.sin(xx[cover] * 40)
    else:
        mouth = (np.abs(yy - (cy + 0.15 * scale)) < 0.012) & (np.abs(xx - (cx + 0.5 * yaw)) < 0.06 * scale)
        img[mouth] = face_level - 0.25
    if state == "phone_use":  # a bright phone at the ear and the hand holding it
        side = rng.choice([-1.0, 1.0])
        px, py = cx + side * (rx + 0.02), cy + rng.uniform(-0.02, 0.06)
        hand = ((xx - px) / 0.07) ** 2 + ((yy - (py + 0.08)) / 0.06) ** 2 <= 1.0
        img[hand] = face_level - 0.05
        phone = (np.abs(xx - px) < 0.035) & (np.abs(yy - py) < 0.09)
        img[phone] = 0.93
    if illum == "low_sun":  # the low sun floods one side of the cabin
        side = rng.choice([0.0, 1.0])
        gain = 0.4 * np.clip(1.0 - np.abs(xx - side) / 0.6, 0, 1)
        img = img + gain.astype(np.float32)
    noise = {"day": 0.025, "night_ir": 0.045, "low_sun": 0.03}[illum]
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# who drives each vehicle


@dataclass(frozen=True)
class Driver:
    age_band: str
    eyewear: str               # habitual: none | glasses; sunglasses depend on the light
    sunglasses_share: float    # share of daylight frames with sunglasses
    mask_share: float
    seating: str


def _driver(rng: np.random.Generator, config: OccupantConfig, exclude: dict[str, set[str]]) -> Driver:
    s = config.slices
    age = str(rng.choice(s["age_band"], p=[0.3, 0.5, 0.2]))
    eyewear = "glasses" if rng.random() < 0.35 else "none"
    sun = float(rng.choice([0.0, 0.5, 0.8], p=[0.5, 0.3, 0.2]))
    if "sunglasses" in exclude.get("eyewear", set()):
        sun = 0.0
    return Driver(age, eyewear, sun, float(rng.choice([0.0, 0.3], p=[0.7, 0.3])), str(rng.choice(s["seating"], p=[0.75, 0.25])))


def _frame_attrs(driver: Driver, rng: np.random.Generator, night_share: float) -> dict[str, str]:
    r = rng.random()
    illum = "night_ir" if r < night_share else ("low_sun" if r < night_share + 0.2 else "day")
    eyewear = driver.eyewear
    if illum != "night_ir" and rng.random() < driver.sunglasses_share:
        eyewear = "sunglasses"
    return {"age_band": driver.age_band, "eyewear": eyewear, "face_covering": "mask" if rng.random() < driver.mask_share else "none",
            "seating": driver.seating, "illumination": illum}


def simulate_vehicle(config: OccupantConfig, cohort: str, vehicle: str, frames: int,
                     exclude: dict[str, set[str]] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """One fleet vehicle's cabin frames: its own one or two drivers, state mix and light (seeded by its id)."""
    seed = int.from_bytes(hashlib.sha256(f"{config.simulator.seed}:{cohort}:{vehicle}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    exclude = exclude or {}
    drivers = [_driver(rng, config, exclude) for _ in range(1 if rng.random() < 0.6 else 2)]
    mix = rng.dirichlet([config.simulator.state_concentration] * len(config.states)) * 0.6 + 0.4 / len(config.states)
    night = float(rng.uniform(0.1, 0.45))
    imgs, rows = [], []
    for i in range(frames):
        d = drivers[0] if len(drivers) == 1 or rng.random() < 0.7 else drivers[1]
        state = str(rng.choice(config.states, p=mix))
        attrs = _frame_attrs(d, rng, night)
        imgs.append(render(state, attrs, rng, config.simulator.frame_size))
        rows.append({"frame": i, "state": state, **attrs})
    return np.stack(imgs), pd.DataFrame(rows)


def simulate_eval_vehicle(config: OccupantConfig, cohort: str, vehicle: str, frames: int, studio: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """A consenting test vehicle: recruited drivers and scripted sessions cover every slice evenly.

    ``studio``: a lab session instead (the data the first model was trained on): studio lighting
    only (no low sun) and no sunglasses, which is why the fleet's data is needed."""
    seed = int.from_bytes(hashlib.sha256(f"{config.simulator.seed}:{'studio' if studio else 'eval'}:{cohort}:{vehicle}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    imgs, rows = [], []
    for i in range(frames):
        attrs = {a: str(rng.choice(config.slices[a])) for a in ATTRIBUTES}
        if attrs["illumination"] == "night_ir" and attrs["eyewear"] == "sunglasses":
            attrs["eyewear"] = "glasses"  # nobody drives at night in sunglasses
        if studio:
            attrs["eyewear"] = "none" if attrs["eyewear"] == "sunglasses" else attrs["eyewear"]
            attrs["illumination"] = "day" if attrs["illumination"] == "low_sun" else attrs["illumination"]
        state = str(rng.choice(config.states))
        imgs.append(render(state, attrs, rng, config.simulator.frame_size))
        rows.append({"frame": i, "state": state, **attrs})
    return np.stack(imgs), pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# storage


def frame_digests(frames: np.ndarray) -> list[str]:
    """sha256 of each frame's raw bytes: the identity the no-upload audit looks for."""
    return [sha256_bytes(np.ascontiguousarray(f).tobytes()) for f in frames]


def write_frames(path: Path, frames: np.ndarray, labels: pd.DataFrame, meta: dict) -> str:
    """Atomically write a cabin frame file (npz: frames uint8 [n,h,w], labels as JSON, meta); returns its sha256."""
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames.astype(np.uint8), labels=np.frombuffer(labels.to_json(orient="records").encode(), np.uint8),
                        meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8))
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def read_frames(path: Path, config: OccupantConfig) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Read and validate a cabin frame file; :class:`CabinDataError` names the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as z:
            frames, labels_raw, meta_raw = z["frames"], z["labels"], z["meta"]
        labels = pd.DataFrame(json.loads(labels_raw.tobytes().decode()))
        meta = json.loads(meta_raw.tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise CabinDataError(f"{path}: unreadable cabin frame file ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile and friends
        raise CabinDataError(f"{path}: unreadable cabin frame file ({type(exc).__name__}: {exc})") from exc
    size = config.simulator.frame_size
    if frames.dtype != np.uint8 or frames.ndim != 3 or frames.shape[1:] != (size, size):
        raise CabinDataError(f"{path}: frames must be uint8 [n, {size}, {size}], found {frames.dtype} {list(frames.shape)}")
    if len(labels) != len(frames):
        raise CabinDataError(f"{path}: {len(frames)} frames but {len(labels)} label rows")
    missing = [c for c in ("state", *ATTRIBUTES) if c not in labels.columns]
    if missing:
        raise CabinDataError(f"{path}: label columns missing: {missing}")
    bad_state = sorted(set(labels["state"]) - set(config.states))
    if bad_state:
        raise CabinDataError(f"{path}: unknown driver states {bad_state} (config/occupant.yaml states: {list(config.states)})")
    for a in ATTRIBUTES:
        bad = sorted(set(labels[a]) - set(config.slices[a]))
        if bad:
            raise CabinDataError(f"{path}: unknown {a} values {bad} (config/occupant.yaml slices.{a}: {list(config.slices[a])})")
    return frames, labels, meta


def vehicle_dir(vehicles_root: Path, cohort: str, vehicle: str) -> Path:
    return Path(vehicles_root) / cohort / vehicle


def fleet_vehicles(config: OccupantConfig, cohort: str) -> list[str]:
    return [f"{cohort}-cab{i:02d}" for i in range(config.simulator.vehicles_per_cohort)]


def simulate_cohort(vehicles_root: Path, landing_root: Path, config: OccupantConfig, cohort: str,
                    exclude: dict[str, set[str]] | None = None, progress=None) -> dict:
    """Write every fleet vehicle's cabin store, and the consented sessions (studio, test vehicles) for ``cohort``."""
    out = {"vehicles": [], "eval_vehicles": [], "studio_sessions": []}
    for v in fleet_vehicles(config, cohort):
        frames, labels = simulate_vehicle(config, cohort, v, config.simulator.frames_per_vehicle, exclude)
        write_frames(vehicle_dir(vehicles_root, cohort, v) / "cabin" / FRAMES_FILE, frames, labels,
                     {"cohort": cohort, "vehicle": v, "source": "simulator"})
        out["vehicles"].append(v)
        if progress:
            progress(v)
    for i in range(config.simulator.eval_vehicles):
        v = f"{cohort}-test{i:02d}"
        frames, labels = simulate_eval_vehicle(config, cohort, v, config.simulator.eval_frames_per_vehicle)
        write_frames(Path(landing_root) / cohort / f"{v}.npz", frames, labels,
                     {"cohort": cohort, "vehicle": v, "split": "eval", "consent": "test-vehicle-programme", "source": "simulator"})
        out["eval_vehicles"].append(v)
        if progress:
            progress(v)
    for i in range(config.simulator.studio_sessions):
        v = f"{cohort}-studio{i:02d}"
        frames, labels = simulate_eval_vehicle(config, cohort, v, config.simulator.studio_frames_per_session, studio=True)
        write_frames(Path(landing_root) / cohort / f"{v}.npz", frames, labels,
                     {"cohort": cohort, "vehicle": v, "split": "studio", "consent": "studio-recording", "source": "simulator"})
        out["studio_sessions"].append(v)
    return out
