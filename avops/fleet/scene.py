"""Procedural sensor scenes: what a car's camera, lidar and radar see.

The platform needs sensor data with ground truth that changes the way real
data changes: the same objects look different at night, in fog or in snow, and
far objects are small and faint. Labeling, training and per-ODD safety metrics
are only meaningful if these conditions really change the pixels, so every
effect here is physically motivated (perspective, depth-dependent fog,
headlight falloff), not a label-only tag.

Everything is a pure function of a ``numpy.random.Generator`` (same seed, same
bytes), and camera drawing is numpy-vectorized (per-object slices, no per-pixel
Python loops) so a 96x96 frame costs ~1-2 ms on one core: whole drives can be
simulated and models trained on 2 CPU cores.

Coordinates: ego frame, x forward, y left, z up, origin on the ground below the
camera; metres, seconds, radians inside, degrees only in radar output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

CLASSES: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist", "traffic_cone")
VRU_CLASSES = ("pedestrian", "cyclist")
ILLUMINATIONS = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog", "snow")
ROAD_TYPES = ("motorway", "urban", "rural")

CAM_HEIGHT_M = 1.4
CAM_HFOV_DEG = 90.0
HORIZON_FRAC = 0.42  # principal point below the middle: more road, less sky
NEAR_PLANE_M = 1.0
LIDAR_HEIGHT_M = 1.8
LIDAR_BEAMS = 16
LIDAR_FOV_DEG = (-15.0, 15.0)
LIDAR_MAX_RANGE_M = 100.0
RADAR_HALF_FOV_DEG = 60.0
RADAR_MAX_RANGE_M = 160.0
MIN_BOX_HEIGHT_PX = 4.0
MAX_OCCLUSION = 0.95


@dataclass(frozen=True)
class Odd:
    """ISO 34503-style operating conditions of one drive segment."""

    illumination: str  # "day" | "dusk" | "night"
    weather: str  # "clear" | "rain" | "fog" | "snow"
    road_type: str  # "motorway" | "urban" | "rural"
    roadworks: bool

    def __post_init__(self) -> None:
        # Fail at construction: a typo would otherwise silently render "day".
        for value, allowed in (
            (self.illumination, ILLUMINATIONS),
            (self.weather, WEATHERS),
            (self.road_type, ROAD_TYPES),
        ):
            if value not in allowed:
                raise ValueError(f"{value!r} not in {allowed}")


@dataclass(frozen=True)
class SceneObject:
    """Ground truth of one road user, as a z-up box standing on the ground."""

    track_id: int
    cls: str  # one of CLASSES
    x: float  # metres ahead of the ego vehicle (box centre)
    y: float  # metres to the left (+) / right (-)
    length: float
    width: float
    height: float
    vx: float  # world-frame velocity along x (m/s), for radar doppler
    vy: float


@dataclass(frozen=True)
class CameraFrame:
    """One camera image with 2D ground truth for the objects a labeler could see."""

    image: np.ndarray  # uint8 (H, W, 3)
    boxes: np.ndarray  # float32 (k, 4) x0, y0, x1, y1 in pixels, clipped
    classes: list[str]
    track_ids: list[int]
    occlusion: np.ndarray  # float32 (k,) fraction hidden 0..1


# --------------------------------------------------------------------------- #
# Road layouts (shared by camera, lidar and radar so the sensors agree)
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Road:
    lanes: tuple[float, ...]  # lane centres (y)
    lane_width: float
    road: tuple[float, float]  # asphalt y-range incl. shoulders
    sidewalks: tuple[tuple[float, float], ...]
    markings: tuple[tuple[float, float, float, float], ...]  # y, half-width, period, duty
    curbs: tuple[float, ...]
    walls: tuple[tuple[float, float, float], ...]  # lidar/radar planes: y, z0, z1


_ROADS: dict[str, _Road] = {
    "motorway": _Road(
        lanes=(3.75, 0.0, -3.75),
        lane_width=3.75,
        road=(-8.6, 6.4),
        sidewalks=(),
        markings=(
            (5.625, 0.1, 0.0, 1.0),
            (1.875, 0.075, 18.0, 6.0 / 18.0),
            (-1.875, 0.075, 18.0, 6.0 / 18.0),
            (-5.625, 0.15, 0.0, 1.0),
        ),
        curbs=(),
        walls=((6.6, 0.45, 0.8), (-9.1, 0.45, 0.8)),
    ),
    "urban": _Road(
        lanes=(0.0, 3.2),
        lane_width=3.2,
        road=(-3.8, 4.8),
        sidewalks=((-6.8, -3.8), (4.8, 7.8)),
        markings=((1.6, 0.06, 9.0, 3.0 / 9.0), (-1.6, 0.06, 0.0, 1.0)),
        curbs=(-3.8, 4.8),
        walls=((7.8, 0.0, 12.0), (-6.8, 0.0, 12.0)),
    ),
    "rural": _Road(
        lanes=(0.0, 3.25),
        lane_width=3.25,
        road=(-1.9, 5.15),
        sidewalks=(),
        markings=(
            (-1.625, 0.06, 0.0, 1.0),
            (1.625, 0.06, 12.0, 4.0 / 12.0),
            (4.875, 0.06, 0.0, 1.0),
        ),
        curbs=(),
        walls=(),
    ),
}

_DIMS: dict[str, tuple[tuple[float, float], ...]] = {
    # (length, width, height) ranges
    "car": ((3.9, 4.9), (1.7, 1.95), (1.4, 1.6)),
    "truck": ((7.5, 12.0), (2.45, 2.55), (3.3, 4.0)),
    "pedestrian": ((0.35, 0.5), (0.5, 0.65), (1.55, 1.92)),
    "cyclist": ((1.65, 1.9), (0.55, 0.7), (1.65, 1.85)),
    "traffic_cone": ((0.35, 0.45), (0.35, 0.45), (0.75, 1.0)),
}

_CLASS_MIX: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "motorway": (("car", "truck"), (0.72, 0.28)),
    "urban": (("car", "pedestrian", "cyclist"), (0.5, 0.32, 0.18)),
    "rural": (("car", "truck", "cyclist"), (0.75, 0.08, 0.17)),
}


def _hash01(a: int, salt: int) -> float:
    """Stable per-track pseudo-random number, so an object keeps its colours across frames."""
    h = (a * 0x9E3779B1 + salt * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 12
    h = (h * 0x297A2D39) & 0xFFFFFFFF
    h ^= h >> 15
    return h / 4294967296.0


def _extents(o: SceneObject) -> tuple[float, float, bool]:
    """Box extents along x and y; VRUs crossing the road are turned sideways."""
    crossing = abs(o.vy) > abs(o.vx) and abs(o.vy) > 0.2
    return (o.width, o.length, True) if crossing else (o.length, o.width, False)


# --------------------------------------------------------------------------- #
# Object sampling and motion
# --------------------------------------------------------------------------- #


def _dims(rng: np.random.Generator, cls: str) -> tuple[float, float, float]:
    (l0, l1), (w0, w1), (h0, h1) = _DIMS[cls]
    return (float(rng.uniform(l0, l1)), float(rng.uniform(w0, w1)), float(rng.uniform(h0, h1)))


def _place(
    rng: np.random.Generator, cls: str, odd: Odd, x_lo: float, x_hi: float
) -> tuple[float, float, float, float]:
    """Position and world velocity for one object of ``cls``; x biased towards the ego."""
    road = _ROADS[odd.road_type]
    if cls in VRU_CLASSES:  # they matter most (and are only visible) close by
        x_hi = min(x_hi, 40.0)
    x = x_lo + (x_hi - x_lo) * float(rng.random()) ** 1.6
    vy = 0.0
    u = float(rng.random())
    rt = odd.road_type
    if cls in ("car", "truck"):
        if rt == "motorway":
            p = (0.15, 0.35, 0.5) if cls == "truck" else (0.34, 0.33, 0.33)
            y = road.lanes[int(rng.choice(3, p=p))]
            vx = rng.uniform(22.0, 25.5) if cls == "truck" else rng.uniform(24.0, 38.0)
        elif rt == "urban":
            if u < 0.45:
                y, vx = 0.0, rng.uniform(6.0, 13.0)
            elif u < 0.75:
                y, vx = 3.2, -rng.uniform(6.0, 13.0)
            else:
                y, vx = -2.75, 0.0  # parked
        else:
            if u < 0.55:
                y, vx = 0.0, rng.uniform(14.0, 25.0)
            else:
                y, vx = 3.25, -rng.uniform(14.0, 27.0)
        y += float(rng.normal(0.0, 0.2))
    elif cls == "pedestrian":
        if u < 0.65:  # on a sidewalk, walking or standing
            lo, hi = road.sidewalks[int(rng.integers(len(road.sidewalks)))] if road.sidewalks else (-3.5, -2.2)
            y = rng.uniform(lo + 0.5, hi - 0.5)
            vx = 0.0 if rng.random() < 0.3 else float(rng.choice((-1.0, 1.0))) * rng.uniform(0.8, 1.6)
        else:  # crossing
            y = rng.uniform(-3.5, 4.5)
            vx, vy = 0.0, float(rng.choice((-1.0, 1.0))) * rng.uniform(0.9, 1.7)
            x = x_lo + (min(x_hi, 30.0) - x_lo) * float(rng.random())
    elif cls == "cyclist":
        if rt == "urban" and u < 0.35:
            y = rng.uniform(-3.0, 4.0)
            vx, vy = 0.0, float(rng.choice((-1.0, 1.0))) * rng.uniform(3.0, 6.0)
            x = x_lo + (min(x_hi, 35.0) - x_lo) * float(rng.random())
        elif u < 0.75:
            y, vx = (-1.0 if rt == "urban" else -1.3), rng.uniform(3.5, 8.0)
        else:
            y, vx = road.lanes[1] + 1.0, -rng.uniform(3.5, 8.0)
        y += float(rng.normal(0.0, 0.15))
    else:
        y, vx = -1.7, 0.0
    return float(x), float(y), float(vx), float(vy)


def _overlaps(o: SceneObject, others: Sequence[SceneObject], margin: float) -> bool:
    ex, ey, _ = _extents(o)
    for p in others:
        px, py, _ = _extents(p)
        if abs(o.x - p.x) < (ex + px) / 2 + margin and abs(o.y - p.y) < (ey + py) / 2 + 0.2:
            return True
    return False


def _cones(rng: np.random.Generator, odd: Odd, n: int, x0: float, first_id: int) -> list[SceneObject]:
    """A line of cones along a lane edge, or a taper closing part of the ego lane."""
    road = _ROADS[odd.road_type]
    edge = -road.lane_width / 2
    taper = rng.random() < 0.3
    gap = float(rng.uniform(3.0, 5.0))
    out = []
    for i in range(n):
        length, width, height = _dims(rng, "traffic_cone")
        y = edge + (i / max(n - 1, 1)) * road.lane_width * 0.45 if taper else edge
        out.append(
            SceneObject(first_id + i, "traffic_cone", x0 + i * gap, float(y + rng.normal(0, 0.05)),
                        length, width, height, 0.0, 0.0)
        )
    return out


def _sample_one(
    rng: np.random.Generator, odd: Odd, track_id: int, x_lo: float, x_hi: float
) -> SceneObject:
    classes, p = _CLASS_MIX[odd.road_type]
    cls = str(classes[int(rng.choice(len(classes), p=p))])
    length, width, height = _dims(rng, cls)
    x, y, vx, vy = _place(rng, cls, odd, x_lo + length / 2, x_hi)
    return SceneObject(track_id, cls, x, y, length, width, height, vx, vy)


def sample_objects(rng: np.random.Generator, odd: Odd, n_max: int = 8) -> list[SceneObject]:
    """Sample the road users of one scene; the class mix follows the road type.

    Motorways carry cars and trucks, urban roads cars, pedestrians and cyclists,
    rural roads cars and some cyclists; roadworks add cones along the lane edge.
    About 10% of scenes (without roadworks) are empty, because "nothing there"
    is a frame a detector must get right too.
    """
    if n_max <= 0 or (not odd.roadworks and rng.random() < 0.1):
        return []
    objs: list[SceneObject] = []
    if odd.roadworks:
        n_cones = min(int(rng.integers(3, 7)), n_max)
        objs += _cones(rng, odd, n_cones, float(rng.uniform(4.0, 14.0)), 0)
    n_other = int(rng.integers(0 if objs else 1, n_max - len(objs) + 1))
    x_hi = 50.0 if odd.road_type == "urban" else 70.0
    for _ in range(n_other):
        for _try in range(20):
            o = _sample_one(rng, odd, len(objs), 4.0, x_hi)
            if not _overlaps(o, objs, 1.5):
                objs.append(o)
                break
    return objs


def step_objects(
    objects: Sequence[SceneObject],
    dt: float,
    ego_speed: float,
    rng: np.random.Generator,
    odd: Odd | None = None,
    n_max: int = 10,
    spawn_rate_hz: float = 0.25,
) -> list[SceneObject]:
    """Advance objects by ``dt`` relative to an ego driving at ``ego_speed`` along x.

    Consecutive frames of a drive must be correlated like a real drive (tracks
    persist, approach, leave), otherwise tracking and temporal auto-labeling
    cannot be exercised. Objects fully behind the ego or beyond 120 m are
    dropped; with ``odd`` given, new ones occasionally appear far ahead (or,
    for faster traffic, from behind). Spawned ids are random 31-bit numbers so
    they never collide with a dropped track without carrying hidden state.
    """
    out: list[SceneObject] = []
    for o in objects:
        vx = o.vx
        moving = abs(o.vx) > 0.05 or abs(o.vy) > 0.05
        if moving and o.cls in ("car", "truck"):
            vx = float(np.sign(vx)) * max(0.5, abs(vx + rng.normal(0.0, 0.4 * math.sqrt(dt))))
        ex, _, _ = _extents(o)
        # A lead vehicle about to be rear-ended keeps its distance instead (the
        # simulated ego never brakes, real drivers do).
        if o.cls in ("car", "truck") and abs(o.y) < 1.2 and 0.0 < o.x - ex / 2 < 12.0 and vx < ego_speed:
            vx = ego_speed + 0.3
        x = o.x + (vx - ego_speed) * dt
        y = o.y + o.vy * dt
        if x + ex / 2 < 0.0 or x > 120.0 or abs(y) > 25.0:
            continue
        out.append(replace(o, x=float(x), y=float(y), vx=float(vx)))
    if odd is not None and len(out) < n_max and rng.random() < 1.0 - math.exp(-spawn_rate_hz * dt):
        new_id = int(rng.integers(1 << 20, (1 << 31) - 1))
        if odd.roadworks and rng.random() < 0.3:
            cones = _cones(rng, odd, min(int(rng.integers(3, 6)), n_max - len(out)), 60.0, new_id)
            out += [c for c in cones if not _overlaps(c, out, 0.5)]
        else:
            o = _sample_one(rng, odd, new_id, 55.0, 80.0)
            if o.cls in ("car", "truck") and o.vx > ego_speed + 2.0 and abs(o.y) > 1.0:
                o = replace(o, x=-o.length / 2 + 1.0)  # faster traffic overtakes from behind
            if not _overlaps(o, out, 2.0):
                out.append(o)
    return out


# --------------------------------------------------------------------------- #
# Camera
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Geo:
    size: int
    f: float
    cx: float
    cy: float
    uc: np.ndarray  # (S,) column centres
    vc: np.ndarray  # (S,) row centres
    hr: int  # first ground row
    xg: np.ndarray  # (G, 1) ground distance of each ground row
    yg: np.ndarray  # (G, S) ground lateral offset
    dxg: np.ndarray  # (G, 1) metres of road per pixel row (for anti-aliasing)
    vign: np.ndarray  # (S, S, 1)


@lru_cache(maxsize=8)
def _geo(size: int) -> _Geo:
    f = (size / 2) / math.tan(math.radians(CAM_HFOV_DEG / 2))
    cx, cy = size / 2, HORIZON_FRAC * size
    uc = np.arange(size, dtype=np.float32) + 0.5
    vc = uc.copy()
    hr = int(math.ceil(cy + 0.05))
    xg = (f * CAM_HEIGHT_M / (vc[hr:] - cy))[:, None].astype(np.float32)
    yg = (-(uc[None, :] - cx) * xg / f).astype(np.float32)
    dxg = (xg**2 / (f * CAM_HEIGHT_M)).astype(np.float32)
    r2 = ((uc[None, :] - cx) ** 2 + (vc[:, None] - size / 2) ** 2) / (size / 2) ** 2
    vign = (1.0 - 0.12 * r2)[..., None].astype(np.float32)
    for a in (uc, vc, xg, yg, dxg, vign):
        a.setflags(write=False)
    return _Geo(size, f, cx, cy, uc, vc, hr, xg, yg, dxg, vign)


@dataclass(frozen=True)
class _Layout:
    """Static roadside scenery; stable across a drive when built from a layout seed."""

    asphalt: np.ndarray
    grass: np.ndarray
    fac_period: float
    fac_bounds: tuple[np.ndarray, np.ndarray]  # left, right segment ends (cumulative)
    fac_height: tuple[np.ndarray, np.ndarray]
    fac_color: tuple[np.ndarray, np.ndarray]
    trees: np.ndarray  # (n, 5): x_world, y, height, crown radius, shade
    tree_period: float
    phases: np.ndarray  # (6,) hill / tree-line phases
    pole_offset: float


_FACADES = np.array(
    [[0.78, 0.72, 0.62], [0.62, 0.36, 0.28], [0.72, 0.72, 0.70], [0.85, 0.83, 0.78],
     [0.55, 0.52, 0.50], [0.80, 0.66, 0.46], [0.50, 0.56, 0.60], [0.70, 0.52, 0.45]],
    np.float32,
)


def _layout(rng: np.random.Generator) -> _Layout:
    bounds, heights, colors = [], [], []
    period = 240.0
    for _ in range(2):
        lengths = rng.uniform(8.0, 26.0, 20)
        ends = np.cumsum(lengths)
        n = int(np.searchsorted(ends, period)) + 1
        ends = ends[:n]
        ends[-1] = period
        h = rng.uniform(7.0, 22.0, n)
        h[rng.random(n) < 0.1] = 0.0  # gap between buildings
        bounds.append(ends.astype(np.float32))
        heights.append(h.astype(np.float32))
        colors.append(_FACADES[rng.integers(0, len(_FACADES), n)] * rng.uniform(0.85, 1.1, (n, 1)))
    n_trees = int(rng.integers(6, 14))
    side = rng.choice((-1.0, 1.0), n_trees)
    trees = np.stack(
        [
            rng.uniform(0.0, 240.0, n_trees),
            side * rng.uniform(8.0, 16.0, n_trees) + np.where(side > 0, 3.0, 0.0),
            rng.uniform(5.0, 11.0, n_trees),
            rng.uniform(1.4, 3.0, n_trees),
            rng.uniform(0.7, 1.15, n_trees),
        ],
        axis=1,
    ).astype(np.float32)
    return _Layout(
        asphalt=(np.array([0.36, 0.36, 0.38]) * rng.uniform(0.85, 1.12)).astype(np.float32),
        grass=(np.array([0.33, 0.47, 0.20]) * rng.uniform(0.85, 1.1, 3)).astype(np.float32),
        fac_period=period,
        fac_bounds=(bounds[0], bounds[1]),
        fac_height=(heights[0], heights[1]),
        fac_color=(colors[0].astype(np.float32), colors[1].astype(np.float32)),
        trees=trees,
        tree_period=240.0,
        phases=rng.uniform(0, 2 * np.pi, 6).astype(np.float32),
        pole_offset=float(rng.uniform(0.0, 30.0)),
    )


@lru_cache(maxsize=64)
def _seeded_layout(seed: int) -> _Layout:
    return _layout(np.random.default_rng(seed))


# Part indices of object palettes (albedo + emission per part).
(BODY, GLASS, TYRE, RIM, DARK, RLIGHT, FLIGHT, PLATE, ACCENT, SKIN, HAIR, SHIRT, PANTS, WHITE,
 ORANGE) = range(15)
_BASE_PAL = np.array(
    [[0.5, 0.5, 0.5], [0.16, 0.2, 0.25], [0.05, 0.05, 0.05], [0.45, 0.45, 0.47], [0.09, 0.09, 0.1],
     [0.6, 0.06, 0.05], [0.88, 0.88, 0.82], [0.85, 0.85, 0.8], [0.5, 0.5, 0.5], [0.8, 0.6, 0.48],
     [0.15, 0.1, 0.06], [0.8, 0.2, 0.2], [0.15, 0.18, 0.3], [0.92, 0.92, 0.9], [1.0, 0.42, 0.05]],
    np.float32,
)
_CAR_COLORS = np.array(
    [[0.9, 0.9, 0.88], [0.68, 0.7, 0.72], [0.07, 0.07, 0.08], [0.33, 0.34, 0.36], [0.72, 0.08, 0.07],
     [0.1, 0.2, 0.55], [0.25, 0.42, 0.7], [0.1, 0.32, 0.16], [0.85, 0.72, 0.15], [0.45, 0.3, 0.2]],
    np.float32,
)
_CAR_P = np.array([0.2, 0.18, 0.16, 0.12, 0.09, 0.07, 0.06, 0.05, 0.03, 0.04])
_CAR_CDF = np.cumsum(_CAR_P / _CAR_P.sum())
_TRUCK_BOX = np.array(
    [[0.92, 0.92, 0.9], [0.75, 0.76, 0.78], [0.15, 0.3, 0.62], [0.72, 0.12, 0.1], [0.92, 0.75, 0.12],
     [0.2, 0.45, 0.25]],
    np.float32,
)
_TRUCK_CAB = np.array(
    [[0.92, 0.92, 0.9], [0.75, 0.1, 0.08], [0.12, 0.25, 0.6], [0.3, 0.3, 0.32], [0.92, 0.55, 0.1]],
    np.float32,
)
_SHIRTS = np.array(
    [[0.85, 0.15, 0.12], [0.15, 0.35, 0.8], [0.95, 0.85, 0.2], [0.2, 0.6, 0.3], [0.95, 0.95, 0.95],
     [0.1, 0.1, 0.12], [1.0, 0.55, 0.1], [0.55, 0.25, 0.65], [0.85, 1.0, 0.15]],
    np.float32,
)
_PANTS = np.array(
    [[0.12, 0.15, 0.3], [0.07, 0.07, 0.08], [0.3, 0.4, 0.58], [0.62, 0.54, 0.38], [0.3, 0.2, 0.12]],
    np.float32,
)
_SKINS = np.array([[0.93, 0.75, 0.62], [0.8, 0.58, 0.42], [0.55, 0.37, 0.25], [0.35, 0.23, 0.16]], np.float32)
_HAIRS = np.array([[0.12, 0.08, 0.05], [0.05, 0.05, 0.05], [0.75, 0.62, 0.35], [0.6, 0.6, 0.6]], np.float32)


def _pick(table: np.ndarray, track_id: int, salt: int) -> np.ndarray:
    return table[int(_hash01(track_id, salt) * len(table))]


def _palette(o: SceneObject, odd: Odd, brake: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-object albedo and emission tables; colours hash from the track id so they persist."""
    pal = _BASE_PAL.copy()
    em = np.zeros_like(pal)
    tid = o.track_id
    shade = 0.85 + 0.3 * _hash01(tid, 7)
    if o.cls == "car":
        pal[BODY] = _CAR_COLORS[int(np.searchsorted(_CAR_CDF, _hash01(tid, 1)))]
    elif o.cls == "truck":
        pal[BODY] = _pick(_TRUCK_BOX, tid, 1)
        pal[ACCENT] = _pick(_TRUCK_CAB, tid, 2)
    else:
        pal[SHIRT] = _pick(_SHIRTS, tid, 3) * shade
        pal[PANTS] = _pick(_PANTS, tid, 4)
        pal[SKIN] = _pick(_SKINS, tid, 5)
        pal[HAIR] = _pick(_HAIRS, tid, 6)
        if o.cls == "cyclist":
            pal[BODY] = _pick(_CAR_COLORS, tid, 8) * 0.8  # bike frame
    np.clip(pal, 0.0, 1.0, out=pal)
    lit = odd.illumination != "day"
    if lit or brake:
        em[RLIGHT] = (0.9, 0.06, 0.04) if lit else (0.7, 0.03, 0.02)
    em[FLIGHT] = (1.2, 1.1, 0.9) if odd.illumination == "night" else (0.9, 0.85, 0.7) if lit else (0.3, 0.3, 0.28)
    return pal, em


def _seg(x: np.ndarray, z: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r: float) -> np.ndarray:
    """Pixels within ``r`` metres of a segment: limbs and bike frames as thick lines."""
    dx, dz = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * dx + (z - p0[1]) * dz) / (dx * dx + dz * dz), 0.0, 1.0)
    return (x - p0[0] - t * dx) ** 2 + (z - p0[1] - t * dz) ** 2 < r * r


def _shade_car_end(s: np.ndarray, t: np.ndarray, front: bool) -> np.ndarray:
    lab = np.full((t.shape[0], s.shape[1]), -1, np.int8)
    ds = np.abs(s - 0.5)
    lab[(t < 0.6) & (ds <= 0.5)] = BODY
    k = (t - 0.6) / 0.4
    lab[(t >= 0.6) & (ds < 0.43 - 0.13 * k)] = BODY
    if front:
        lab[(t >= 0.62) & (t < 0.93) & (ds < 0.4 - 0.13 * k)] = GLASS
        lab[(t >= 0.38) & (t < 0.5) & (ds > 0.3)] = FLIGHT
        lab[(t >= 0.22) & (t < 0.36) & (ds < 0.22)] = DARK
    else:
        lab[(t >= 0.65) & (t < 0.91) & (ds < 0.37 - 0.13 * k)] = GLASS
        lab[(t >= 0.4) & (t < 0.53) & (ds > 0.33)] = RLIGHT
        lab[(t >= 0.24) & (t < 0.34) & (ds < 0.12)] = PLATE
    lab[(t >= 0.12) & (t < 0.22) & (ds <= 0.5)] = DARK
    lab[(t < 0.22) & (ds > 0.35)] = TYRE
    lab[(t < 0.12) & (ds <= 0.35)] = DARK
    return lab


def _shade_car_side(s: np.ndarray, t: np.ndarray, length: float, height: float) -> np.ndarray:
    lab = np.full(np.broadcast_shapes(s.shape, t.shape), -1, np.int8)
    x, z = s * length, t * height
    lab[(z >= 0.28) & (t < 0.6)] = BODY
    k = (t - 0.6) / 0.4
    a, b = 0.22 + 0.12 * k, 0.74 - 0.18 * k
    cabin = (t >= 0.6) & (s > a) & (s < b)
    lab[cabin] = BODY
    lab[cabin & (t < 0.92) & (s > a + 0.04) & (s < b - 0.04) & (np.abs(s - 0.49) > 0.02)] = GLASS
    r = 0.33
    for sc in (0.17, 0.81):
        d2 = (x - sc * length) ** 2 + (z - r) ** 2
        lab[d2 < r * r] = TYRE
        lab[d2 < (0.5 * r) ** 2] = RIM
    lab[(s < 0.035) & (t > 0.4) & (t < 0.55)] = RLIGHT
    lab[(s > 0.965) & (t > 0.38) & (t < 0.5)] = FLIGHT
    return lab


def _shade_truck_end(s: np.ndarray, t: np.ndarray, front: bool, height: float) -> np.ndarray:
    lab = np.full((t.shape[0], s.shape[1]), -1, np.int8)
    ds = np.abs(s - 0.5)
    z = t * height
    if front:
        cab_top = 0.78
        lab[(t >= cab_top) & (ds < 0.47)] = BODY  # box behind the cab
        lab[(t < cab_top) & (z >= 0.35) & (ds <= 0.5)] = ACCENT
        lab[(t >= 0.5) & (t < 0.72) & (ds < 0.44)] = GLASS
        lab[(z >= 1.0) & (z < 1.5) & (ds < 0.3)] = DARK  # grille
        lab[(z >= 0.35) & (z < 0.55) & (ds <= 0.5)] = DARK  # bumper
        lab[(z >= 0.7) & (z < 0.95) & (ds > 0.36)] = FLIGHT
        lab[(z < 0.35) & (ds <= 0.5)] = DARK
        lab[(z < 0.5) & (ds > 0.32)] = TYRE
    else:
        box = (z >= 1.05) & (ds <= 0.5)
        lab[box] = BODY
        lab[box & (ds < 0.012)] = DARK  # door seam
        lab[box & (t > 0.97)] = RIM
        lab[(z >= 0.75) & (z < 1.05) & (ds <= 0.5)] = DARK
        lab[(z >= 0.8) & (z < 1.02) & (ds > 0.4)] = RLIGHT
        lab[(z < 1.0) & (ds > 0.28) & (ds <= 0.5) & (z < 0.75)] = TYRE
        lab[(z < 0.75) & (ds <= 0.28)] = DARK
    return lab


def _shade_truck_side(s: np.ndarray, t: np.ndarray, length: float, height: float) -> np.ndarray:
    lab = np.full(np.broadcast_shapes(s.shape, t.shape), -1, np.int8)
    x, z = s * length, t * height
    cab_len = min(2.3, 0.3 * length)
    cab_s = 1.0 - cab_len / length
    box = (z >= 1.05) & (s < cab_s - 0.03)
    lab[box] = BODY
    lab[box & (t > 0.97)] = RIM
    lab[(z >= 0.5) & (z < 1.05) & (s < cab_s)] = DARK
    cab = (s >= cab_s) & (t < 0.8) & (z >= 0.45)
    lab[cab] = ACCENT
    lab[cab & (t > 0.5) & (t < 0.7) & (s > cab_s + 0.35 * (1 - cab_s))] = GLASS
    r = 0.5
    for xc in (0.12 * length, 0.25 * length, length - 0.55 * cab_len):
        d2 = (x - xc) ** 2 + (z - r) ** 2
        lab[d2 < r * r] = TYRE
        lab[d2 < (0.45 * r) ** 2] = RIM
    lab[(s < 0.02) & (z > 0.8) & (z < 1.05)] = RLIGHT
    return lab


def _shade_pedestrian(s: np.ndarray, t: np.ndarray, width: float, height: float, side: bool,
                      phase: float) -> np.ndarray:
    lab = np.full((t.shape[0], s.shape[1]), -1, np.int8)
    x, z = (s - 0.5) * width, t * height
    ax = np.abs(x)
    hip, sh = 0.5 * height, 0.82 * height
    lab[(ax < 0.19) & (z >= hip - 0.05) & (z < sh)] = SHIRT
    lab[(ax < 0.06) & (z >= sh) & (z < 0.86 * height)] = SKIN
    if side:
        sw = 0.12 + 0.22 * abs(math.sin(phase))
        legs = _seg(x, z, (0.0, hip), (sw * hip, 0.0), 0.075) | _seg(x, z, (0.0, hip), (-sw * hip, 0.0), 0.075)
        arm = _seg(x, z, (0.0, sh - 0.05), (-0.6 * sw, hip + 0.05), 0.05)
        lab[arm] = SHIRT
    else:
        legs = (np.abs(ax - 0.085) < 0.07) & (z < hip)
        lab[(ax >= 0.19) & (ax < 0.25) & (z >= hip) & (z < sh - 0.03)] = SHIRT
    lab[legs] = PANTS
    lab[legs & (z < 0.06)] = TYRE  # shoes
    head = x**2 + (z - 0.925 * height) ** 2 < 0.11**2
    lab[head] = SKIN
    lab[head & (z > 0.95 * height)] = HAIR
    return lab


def _shade_cyclist(s: np.ndarray, t: np.ndarray, width: float, height: float, side: bool,
                   facing_right: bool) -> np.ndarray:
    lab = np.full((t.shape[0], s.shape[1]), -1, np.int8)
    x, z = (s - 0.5) * width, t * height
    if not facing_right:
        x = -x
    hw = width / 2
    if side:
        r = 0.34
        wx = hw - r - 0.02
        for xc in (-wx, wx):
            d2 = (x - xc) ** 2 + (z - r) ** 2
            lab[(d2 < r * r) & (d2 > (0.72 * r) ** 2)] = TYRE
        frame = (_seg(x, z, (-wx, r), (0.0, 0.42), 0.04) | _seg(x, z, (0.0, 0.42), (-0.15, 0.9), 0.04)
                 | _seg(x, z, (-0.1, 0.82), (0.45, 0.85), 0.04) | _seg(x, z, (0.45, 0.95), (wx, r), 0.04))
        lab[frame] = BODY
        lab[_seg(x, z, (-0.12, 0.98), (0.05, 0.45), 0.08)] = PANTS
        lab[_seg(x, z, (-0.12, 1.0), (0.18, 1.38), 0.15)] = SHIRT
        lab[_seg(x, z, (0.15, 1.33), (0.45, 1.0), 0.05)] = SHIRT
        head = (x - 0.27) ** 2 + (z - (height - 0.13)) ** 2 < 0.12**2
    else:
        ax = np.abs(x)
        lab[(ax < 0.3) & (z >= 0.97) & (z < 1.04)] = BODY  # handlebar
        legs = (_seg(x, z, (-0.12, 0.98), (-0.17, 0.55), 0.07) | _seg(x, z, (-0.17, 0.55), (-0.1, 0.2), 0.06)
                | _seg(x, z, (0.12, 0.98), (0.2, 0.78), 0.07) | _seg(x, z, (0.2, 0.78), (0.1, 0.48), 0.06))
        lab[legs] = PANTS
        lab[(ax < 0.075) & (z < 0.7)] = TYRE  # rear wheel seen edge-on
        lab[(ax < 0.06) & (z > 0.46) & (z < 0.54)] = RLIGHT
        lab[(ax < 0.19) & (z >= 0.98) & (z < height - 0.26)] = SHIRT  # back, leaning forward
        lab[(ax >= 0.19) & (ax < 0.27) & (z >= 1.02) & (z < height - 0.3)] = SHIRT
        head = x**2 + (z - (height - 0.16)) ** 2 < 0.12**2
    lab[head] = SKIN
    lab[head & (z > height - 0.11)] = HAIR  # helmet / hair
    return lab


def _shade_cone(s: np.ndarray, t: np.ndarray, width: float, height: float) -> np.ndarray:
    lab = np.full((t.shape[0], s.shape[1]), -1, np.int8)
    x, z = np.abs((s - 0.5) * width), t * height
    body = (x < 0.025 + (0.5 * width - 0.05) * (1.0 - t)) & (z >= 0.05 * height)
    lab[body] = ORANGE
    lab[body & (((t > 0.42) & (t < 0.58)) | ((t > 0.7) & (t < 0.8)))] = WHITE
    lab[(z < 0.06 * height) & (x <= 0.5 * width)] = DARK
    return lab


class _Canvas:
    """Albedo, depth, object-id and emission buffers for painter's-algorithm drawing."""

    def __init__(self, size: int) -> None:
        self.alb = np.empty((size, size, 3), np.float32)
        self.depth = np.full((size, size), np.inf, np.float32)
        self.ids = np.full((size, size), -1, np.int16)
        self.em = np.zeros((size, size, 3), np.float32)
        self.has_em = False
        self.selflit = np.zeros((size, size), bool)  # lit windows: bright at night, no bloom

    def paint(self, r0: int, r1: int, c0: int, c1: int, lab: np.ndarray, pal: np.ndarray,
              em: np.ndarray | None, depth: float | np.ndarray, oid: int) -> int:
        m = lab >= 0
        n = int(m.sum())
        if n == 0:
            return 0
        li = lab[m]
        self.alb[r0:r1, c0:c1][m] = pal[li]
        d = self.depth[r0:r1, c0:c1]
        d[m] = depth if np.isscalar(depth) else np.broadcast_to(depth, m.shape)[m]
        self.ids[r0:r1, c0:c1][m] = oid
        if em is not None:
            e = em[li]
            if e.any():
                self.em[r0:r1, c0:c1][m] = e
                self.has_em = True
        return n


def _span(a: float, b: float, size: int) -> tuple[int, int]:
    """Pixel index range whose centres fall in [a, b)."""
    return max(0, math.ceil(a - 0.5)), min(size, math.ceil(b - 0.5))


def _draw_background(cv: _Canvas, g: _Geo, odd: Odd, lay: _Layout, ego_s: float) -> np.ndarray:
    """Sky, ground, roadside scenery; returns the ground-pixel mask (for shadows)."""
    S, f, cx, cy, hr = g.size, g.f, g.cx, g.cy, g.hr
    road = _ROADS[odd.road_type]
    overcast = odd.weather != "clear"
    snow = odd.weather == "snow"
    # Sky: vertical gradient; grey when overcast.
    skies = {
        "day": ((0.42, 0.6, 0.86), (0.8, 0.86, 0.93)),
        "dusk": ((0.25, 0.27, 0.45), (0.95, 0.6, 0.38)),
        "night": ((0.01, 0.012, 0.03), (0.05, 0.05, 0.08)),
    }
    top, hor = (np.array(c, np.float32) for c in skies[odd.illumination])
    if overcast:
        k = {"day": 1.0, "dusk": 0.55, "night": 0.08}[odd.illumination]
        top, hor = np.array([0.62, 0.64, 0.67], np.float32) * k, np.array([0.75, 0.76, 0.78], np.float32) * k
    a = np.clip(g.vc[:hr] / cy, 0, 1)[:, None, None] ** 1.5
    cv.alb[:hr] = top + (hor - top) * a
    # Ground surfaces by lateral band.
    xg, yg = g.xg, g.yg
    xw = xg + ego_s
    pal = np.stack(
        [lay.asphalt, lay.grass, np.array([0.6, 0.58, 0.55], np.float32), np.array([0.46, 0.42, 0.34], np.float32)]
    )
    if snow:
        pal = np.array([[0.5, 0.5, 0.52], [0.86, 0.87, 0.9], [0.8, 0.8, 0.83], [0.8, 0.8, 0.82]], np.float32)
    lab = np.ones(yg.shape, np.int8)
    r0, r1 = road.road
    if odd.road_type == "rural":
        lab[(yg > r0 - 0.6) & (yg < r1 + 0.6)] = 3  # gravel shoulder
    for lo, hi in road.sidewalks:
        lab[(yg >= lo) & (yg <= hi)] = 2
    lab[(yg >= r0) & (yg <= r1)] = 0
    gc = pal[lab]
    var = 1.0 + 0.07 * np.sin(0.31 * xw + 0.8 * np.sin(0.23 * yg)) * np.sin(0.47 * yg + lay.phases[0])
    gc *= var[..., None]
    if odd.weather == "rain":  # wet asphalt mirrors the bright horizon at grazing angles
        r = (0.45 * (1.0 - np.exp(-xg / 25.0))) * (lab == 0)
        gc += (hor * 0.9 - gc * 0.75) * r[..., None] - gc * 0.25 * (lab == 0)[..., None]
    ipx = f / xg  # pixels per metre at each ground row

    def line(y0: float, hw: float, period: float, duty: float, color: np.ndarray) -> None:
        hwp = hw * ipx
        cov = np.clip(hwp + 0.5 - np.abs(yg - y0) * ipx, 0.0, 1.0) * np.minimum(1.0, 2.0 * hwp)
        if period > 0:
            on = (np.mod(xw, period) < duty * period).astype(np.float32)
            cov = cov * np.where(g.dxg > 0.4 * period, duty, on)
        gc[:] += (color - gc) * cov[..., None]

    mark = np.array([0.95, 0.8, 0.15] if odd.roadworks else [0.9, 0.9, 0.88], np.float32)
    if snow:
        mark = gc.mean(axis=(0, 1)) * 0.4 + mark * 0.25  # markings mostly buried
        for lane in road.lanes:
            for side in (-0.85, 0.85):
                line(lane + side, 0.22, 0.0, 1.0, np.array([0.3, 0.3, 0.32], np.float32))
    for y0, hw, period, duty in road.markings:
        line(y0, hw, period, duty, mark)
    for y0 in road.curbs:
        line(y0 + (0.08 if y0 < 0 else -0.08), 0.08, 0.0, 1.0, np.array([0.72, 0.7, 0.68], np.float32))
    cv.alb[hr:] = gc
    cv.depth[hr:] = np.broadcast_to(xg, yg.shape)
    ground = np.zeros((S, S), bool)
    ground[hr:] = True

    phases = lay.phases
    if odd.road_type != "urban":  # distant hills above the horizon
        hp = (S / 96.0) * (2.5 + 2.0 * np.sin(g.uc * 0.06 + phases[1]) + 1.2 * np.sin(g.uc * 0.17 + phases[2]))
        hills = (g.vc[:, None] > cy - hp[None, :]) & (g.vc[:, None] <= cy + 0.5)
        cv.alb[hills] = np.array([0.3, 0.4, 0.3], np.float32) if not snow else np.array([0.82, 0.84, 0.88], np.float32)
        cv.depth[hills] = 900.0
        ground &= ~hills

    left = g.uc < cx

    def wall_coords(y_left: float, y_right: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        yp = np.where(left, y_left, y_right).astype(np.float32)
        with np.errstate(divide="ignore"):
            xc = f * yp / (cx - g.uc)
        valid = (xc > NEAR_PLANE_M) & (xc < 600.0)
        xc = np.where(valid, xc, 1e6).astype(np.float32)
        z = CAM_HEIGHT_M - (g.vc[:, None] - cy) * xc[None, :] / f
        return xc, valid, z

    if odd.road_type in ("rural", "motorway"):  # tree lines along the fields
        ys = (17.0, -14.0) if odd.road_type == "rural" else (26.0, -28.0)
        xc, valid, z = wall_coords(*ys)
        xw_c = xc + ego_s
        prof = 5.0 + 3.0 * np.sin(xw_c / 9.0 + phases[3]) + 2.5 * np.sin(xw_c / 4.3 + phases[4])
        m = valid[None, :] & (z >= 0) & (z < prof[None, :])
        tex = 0.85 + 0.15 * np.sin(xw_c[None, :] * 0.9) * np.sin(z * 2.7 + xw_c[None, :] * 0.3)
        col = np.array([0.16, 0.3, 0.12], np.float32)
        if snow:
            col = np.array([0.45, 0.5, 0.47], np.float32)
        cv.alb[m] = (tex[..., None] * col)[m]
        cv.depth[m] = np.broadcast_to(xc, m.shape)[m]
        ground &= ~m

    if odd.road_type == "urban":
        xc, valid, z = wall_coords(road.walls[0][0], road.walls[1][0])
        xw_c = xc + ego_s
        phase = np.mod(xw_c, lay.fac_period)
        il = np.minimum(np.searchsorted(lay.fac_bounds[0], phase), len(lay.fac_bounds[0]) - 1)
        ir = np.minimum(np.searchsorted(lay.fac_bounds[1], phase), len(lay.fac_bounds[1]) - 1)
        hc = np.where(left, lay.fac_height[0][il], lay.fac_height[1][ir])
        cc = np.where(left[:, None], lay.fac_color[0][il], lay.fac_color[1][ir])
        m = valid[None, :] & (z >= 0) & (z < hc[None, :])
        fx = np.mod(xw_c / 3.0, 1.0)
        fz = np.mod(z / 3.2, 1.0)
        yabs = np.abs(np.where(left, road.walls[0][0], road.walls[1][0]))
        foot = xc**2 / (f * yabs)  # metres of facade per pixel column
        win = ((np.abs(fx - 0.5) < 0.22)[None, :] & (fz > 0.3) & (fz < 0.75) & (z > 3.2)) | (
            (np.mod(xw_c / 7.0, 1.0) < 0.7)[None, :] & (z > 0.6) & (z < 2.6)
        )
        winf = np.where((foot > 1.2)[None, :] | (xc[None, :] / f > 1.0), 0.32, win.astype(np.float32))
        glass = np.array([0.2, 0.24, 0.3], np.float32)
        if snow:
            cc = cc * 0.9 + 0.08
        col = cc[None, :, :] + (glass - cc[None, :, :]) * winf[..., None]
        col[z > hc[None, :] - 0.5] *= 0.75  # roof edge
        cv.alb[m] = col[m]
        cv.depth[m] = np.broadcast_to(xc, m.shape)[m]
        ground &= ~m
        if odd.illumination != "day":
            wid = (np.floor(xw_c / 3.0).astype(np.int64)[None, :] * 7919 + np.floor(z / 3.2).astype(np.int64) * 104729)
            lit = win & m & (((wid * 2654435761) & 0xFFFF) < 0x5000) & (foot < 1.2)[None, :]
            cv.alb[lit] = (0.95, 0.75, 0.42)
            cv.selflit |= lit
        # Street-light poles on both curbs.
        for yp in (-4.3, 5.3):
            for k in range(6):
                xp = k * 30.0 + lay.pole_offset - np.mod(ego_s, 30.0)
                if xp < 3.0:
                    xp += 180.0
                if xp > 120.0:
                    continue
                u = cx - f * yp / xp
                c0, c1 = _span(u - max(0.5, 0.09 * f / xp), u + max(0.5, 0.09 * f / xp), S)
                v_top, v_bot = cy + f * (CAM_HEIGHT_M - 7.0) / xp, cy + f * CAM_HEIGHT_M / xp
                rr0, rr1 = _span(v_top, v_bot, S)
                if c1 <= c0 or rr1 <= rr0:
                    continue
                cv.alb[rr0:rr1, c0:c1] = (0.3, 0.3, 0.32)
                cv.depth[rr0:rr1, c0:c1] = xp
                ground[rr0:rr1, c0:c1] = False
                if odd.illumination != "day":
                    cv.em[rr0:min(rr0 + 1, rr1), c0:c1] = (1.3, 1.1, 0.7)
                    cv.has_em = True

    if odd.road_type == "motorway":  # guardrails: rail + posts
        xc, valid, z = wall_coords(road.walls[0][0], road.walls[1][0])
        xw_c = xc + ego_s
        rail = (z >= 0.45) & (z < 0.8)
        post = (np.mod(xw_c, 2.0) < 0.16)[None, :] & (z >= 0) & (z < 0.8) & (xc < 25.0)[None, :]
        m = valid[None, :] & (rail | post)
        col = np.where(rail[..., None], np.float32(0.62), np.float32(0.3)) * np.array([1.0, 1.02, 1.05], np.float32)
        cv.alb[m] = col[m]
        cv.depth[m] = np.broadcast_to(xc, m.shape)[m]
        ground &= ~m

    if odd.road_type == "rural":  # single trees, far to near
        tx = np.mod(lay.trees[:, 0] - ego_s, lay.tree_period)
        for i in np.argsort(-tx):
            xt = float(tx[i])
            _, yt, ht, cr, shade = (float(v) for v in lay.trees[i])
            if xt < 4.0 or xt > 150.0:
                continue
            u = cx - f * yt / xt
            ipm = f / xt
            v_base = cy + f * CAM_HEIGHT_M / xt
            zc = ht - cr
            cr0, cr1 = _span(u - cr * ipm, u + cr * ipm, S)
            rr0, rr1 = _span(v_base - ht * ipm, v_base, S)
            if cr1 <= cr0 or rr1 <= rr0:
                continue
            xs = (g.uc[cr0:cr1] - u) / ipm
            zs = (v_base - g.vc[rr0:rr1]) / ipm
            crown = (xs[None, :] ** 2 + ((zs[:, None] - zc) * 1.15) ** 2) < cr * cr
            trunk = (np.abs(xs)[None, :] < max(0.18, 0.5 / ipm)) & (zs[:, None] < zc)
            tl = np.full(crown.shape, -1, np.int8)
            tl[trunk] = 0
            tl[crown] = 1
            leaf = np.array([0.18, 0.36, 0.14], np.float32) * shade
            if snow:
                leaf = leaf * 0.5 + 0.42
            tp = np.stack([np.array([0.3, 0.22, 0.15], np.float32), leaf])
            cv.paint(rr0, rr1, cr0, cr1, tl, tp, None, xt, -1)
            ground[rr0:rr1, cr0:cr1] &= tl < 0
    return ground


def _draw_object(cv: _Canvas, g: _Geo, o: SceneObject, oid: int, odd: Odd, brake: bool,
                 ground: np.ndarray, shadow: float) -> tuple[tuple[float, float, float, float], int] | None:
    """Draw one object; returns its (unclipped) box and the number of pixels drawn."""
    S, f, cx, cy, h = g.size, g.f, g.cx, g.cy, CAM_HEIGHT_M
    ex, ey, crossing = _extents(o)
    pal, em = _palette(o, odd, brake)
    vehicle = o.cls in ("car", "truck")
    if vehicle:
        xn, xf = o.x - ex / 2, o.x + ex / 2
        if xf < NEAR_PLANE_M + 0.3:
            return None
        # A vehicle right beside the ego has its rear behind the camera: only
        # the flank (clipped at the near plane) is in view.
        xv = max(xn, NEAR_PLANE_M)
        front = o.vx < -0.05
        u0, u1 = cx - f * (o.y + ey / 2) / xv, cx - f * (o.y - ey / 2) / xv
        v0, v1 = cy + f * (h - o.height) / xv, cy + f * h / xv
        box: list[float] | None = [u0, v0, u1, v1] if xn >= NEAR_PLANE_M else None
        if shadow < 1.0:  # contact shadow on the road under the body
            sc0, sc1 = _span(u0 - 0.15 * (u1 - u0), u1 + 0.15 * (u1 - u0), S)
            sr0, sr1 = _span(cy + f * h / xf, v1 + 0.6, S)
            if sc1 > sc0 and sr1 > sr0:
                gm = ground[sr0:sr1, sc0:sc1]
                cv.alb[sr0:sr1, sc0:sc1][gm] *= shadow
        n = 0
        ys = None
        if o.y - ey / 2 > 0.05:
            ys = o.y - ey / 2
        elif o.y + ey / 2 < -0.05:
            ys = o.y + ey / 2
        if ys is not None:  # visible flank: a vertical plane, columns map to depth
            ua, ub = cx - f * ys / xv, cx - f * ys / xf
            lo_u, hi_u = min(ua, ub), max(ua, ub)
            top = min(v0, cy + f * (h - o.height) / xf)
            c0, c1 = _span(lo_u, hi_u, S)
            r0, r1 = _span(top, v1, S)
            if c1 > c0 and r1 > r0:
                xc = f * ys / (cx - g.uc[c0:c1])
                t = (h - (g.vc[r0:r1, None] - cy) * xc[None, :] / f) / o.height
                s = (xc - xn) / ex
                s = s if not front else 1.0 - s
                s = np.broadcast_to(s[None, :], t.shape)
                lab = (_shade_car_side(s, t, o.length, o.height) if o.cls == "car"
                       else _shade_truck_side(s, t, o.length, o.height))
                lab[(t < 0) | (t >= 1)] = -1
                flank = pal * np.float32(0.75)  # faces turned away from the light are darker
                flank[[RLIGHT, FLIGHT]] = pal[[RLIGHT, FLIGHT]]
                n += cv.paint(r0, r1, c0, c1, lab, flank, em, xc[None, :], oid)
                fb = [lo_u, top, hi_u, v1]
                box = fb if box is None else [min(box[0], lo_u), min(box[1], top), max(box[2], hi_u), box[3]]
        if box is None:
            return None
        if xn >= NEAR_PLANE_M:
            c0, c1 = _span(u0, u1, S)
            r0, r1 = _span(v0, v1, S)
            if c1 > c0 and r1 > r0:
                s = ((g.uc[c0:c1] - u0) / (u1 - u0))[None, :]
                t = ((v1 - g.vc[r0:r1]) / (v1 - v0))[:, None]
                lab = (_shade_car_end(s, t, front) if o.cls == "car"
                       else _shade_truck_end(s, t, front, o.height))
                n += cv.paint(r0, r1, c0, c1, lab, pal, em, xn, oid)
        return (box[0], box[1], box[2], box[3]), n
    # VRUs and cones: a billboard at the object's centre, sideways when crossing.
    xb = o.x
    if xb - ex / 2 < NEAR_PLANE_M:
        return None
    wb = ey
    u0, u1 = cx - f * (o.y + wb / 2) / xb, cx - f * (o.y - wb / 2) / xb
    v0, v1 = cy + f * (h - o.height) / xb, cy + f * h / xb
    c0, c1 = _span(u0, u1, S)
    r0, r1 = _span(v0, v1, S)
    if c1 <= c0 or r1 <= r0:
        return (u0, v0, u1, v1), 0
    s = ((g.uc[c0:c1] - u0) / (u1 - u0))[None, :]
    t = ((v1 - g.vc[r0:r1]) / (v1 - v0))[:, None]
    if o.cls == "pedestrian":
        phase = 0.7 * o.y + 2 * math.pi * _hash01(o.track_id, 9)
        lab = _shade_pedestrian(s, t, wb, o.height, crossing, phase)
    elif o.cls == "cyclist":
        lab = _shade_cyclist(s, t, wb, o.height, crossing, facing_right=o.vy < 0)
    else:
        lab = _shade_cone(s, t, wb, o.height)
    return (u0, v0, u1, v1), cv.paint(r0, r1, c0, c1, lab, pal, em, xb, oid)


def _blur(a: np.ndarray, passes: int = 2) -> np.ndarray:
    """Separable [1 2 1]/4 blur, repeated: cheap bloom for lights."""
    for _ in range(passes):
        b = a.copy()
        b[1:] += a[:-1]
        b[:-1] += a[1:]
        b[0] += a[0]
        b[-1] += a[-1]
        a = b / 3.0
        b = a.copy()
        b[:, 1:] += a[:, :-1]
        b[:, :-1] += a[:, 1:]
        b[:, 0] += a[:, 0]
        b[:, -1] += a[:, -1]
        a = b / 3.0
    return a


# Meteorological visibility; extinction sigma = 3 / V (Koschmieder, 5% contrast threshold).
_VISIBILITY_M = {"clear": 2000.0, "rain": 600.0, "snow": 400.0}


def render_camera(
    rng: np.random.Generator,
    objects: Sequence[SceneObject],
    odd: Odd,
    size: int = 96,
    *,
    layout_seed: int | None = None,
    ego_s: float | None = None,
) -> CameraFrame:
    """Render the front camera (pinhole, 1.4 m high, ~90 deg HFOV) with 2D ground truth.

    ``layout_seed`` fixes the roadside scenery (buildings, trees) for a whole
    drive and ``ego_s`` (metres travelled) scrolls it and the lane dashes, so
    consecutive frames of a drive look like one road; by default both come from
    ``rng`` (independent scenes). Boxes are the projected object extent clipped
    to the image, kept when >= 4 px tall and not (almost) fully occluded.
    """
    g = _geo(size)
    S, f, cx, cy = g.size, g.f, g.cx, g.cy
    lay = _seeded_layout(layout_seed) if layout_seed is not None else _layout(rng)
    if ego_s is None:
        ego_s = float(rng.uniform(0.0, 1000.0))
    cv = _Canvas(S)
    ground = _draw_background(cv, g, odd, lay, ego_s)

    shadow = {"day": 0.55, "dusk": 0.75, "night": 1.0}[odd.illumination]
    if odd.weather != "clear":
        shadow = 1.0 - (1.0 - shadow) * 0.4
    order = sorted(range(len(objects)), key=lambda i: -(objects[i].x - _extents(objects[i])[0] / 2))
    brakes = rng.random(len(objects)) < 0.2
    drawn: list[tuple[int, tuple[float, float, float, float], int]] = []
    for i in order:
        r = _draw_object(cv, g, objects[i], i, odd, bool(brakes[i]), ground, shadow)
        if r is not None and r[1] > 0:
            drawn.append((i, r[0], r[1]))

    # Lighting: sun/sky, or ambient + ego low beams + street lights.
    illum, weather = odd.illumination, odd.weather
    sky = ~np.isfinite(cv.depth)
    img = cv.alb
    if illum == "day":
        img *= {"clear": 1.0, "rain": 0.72, "fog": 0.88, "snow": 0.92}[weather]
    else:
        d = np.minimum(cv.depth, 400.0)
        py = -(g.uc[None, :] - cx) * d / f
        pz = CAM_HEIGHT_M - (g.vc[:, None] - cy) * d / f
        beam = (1.05 * np.exp(-((py / (d + 3.0)) / 0.36) ** 2) / (1.0 + (d / 24.0) ** 2)
                * np.exp(-np.maximum(pz - 1.2, 0.0) / 1.5))
        light = (0.05 if illum == "night" else 0.5) + beam * (1.0 if illum == "night" else 0.35)
        if odd.road_type == "urban":
            dx = np.mod(d + ego_s - lay.pole_offset + 15.0, 30.0) - 15.0
            pool = np.exp(-(dx / 6.0) ** 2) * (np.exp(-((py + 3.3) / 2.6) ** 2) + np.exp(-((py - 4.3) / 2.6) ** 2))
            light = light + pool * (0.55 if illum == "night" else 0.15)
        light[sky] = 1.0
        light[cv.selflit] = 0.8
        img *= light[..., None]
    if weather == "rain":  # desaturated, darker tones
        lum = img.mean(axis=2, keepdims=True)
        img += (lum - img) * 0.3

    # Depth-dependent haze / fog: contrast falls with distance.
    vis = float(rng.uniform(25.0, 70.0)) if weather == "fog" else _VISIBILITY_M[weather]
    sigma_ext = 3.0 / vis
    fogc = {"day": (0.76, 0.77, 0.78), "dusk": (0.46, 0.43, 0.44), "night": (0.05, 0.05, 0.06)}[illum]
    if weather == "clear":
        fogc = tuple(0.5 * np.asarray(fogc) + 0.5 * np.asarray(img[max(0, g.hr - 2), S // 2]))
    fog_amt = 1.0 - np.exp(-cv.depth * sigma_ext)
    fog_amt[sky] = 1.0 if weather == "fog" else 0.0
    fogimg = np.broadcast_to(np.asarray(fogc, np.float32), img.shape).copy()
    if weather == "fog" and illum != "day":  # headlights light up the fog in front
        glow = np.exp(-(((g.uc[None, :] - cx) / (0.35 * S)) ** 2) - (((g.vc[:, None] - 0.75 * S) / (0.3 * S)) ** 2))
        fogimg += (0.22 if illum == "night" else 0.1) * glow[..., None]
    if weather == "fog":  # multiple scattering veils even the nearest surfaces
        fog_amt = 0.2 + 0.8 * fog_amt
    img += (fogimg - img) * fog_amt[..., None]

    if cv.has_em:
        em = cv.em * np.exp(-np.minimum(cv.depth, 1e4) * (sigma_ext / 1.5))[..., None]
        bloom = _blur(em, 3 if weather in ("fog", "rain") else 2)
        img += em * 0.8 + bloom * (1.6 if illum == "night" else 0.8)

    if weather == "rain":  # streaks close to the lens
        n = int(rng.integers(40, 90))
        length = int(rng.integers(4, 8)) * S // 96
        x0 = rng.uniform(-0.2 * S, S, n)
        y0 = rng.uniform(-length, S, n)
        slope = float(rng.uniform(0.1, 0.35))
        k = np.arange(length)
        rr = np.clip((y0[:, None] + k).astype(np.int64), 0, S - 1)
        cc = np.clip((x0[:, None] + slope * k).astype(np.int64), 0, S - 1)
        val = {"day": 0.85, "dusk": 0.5, "night": 0.3}[illum]
        img[rr, cc] = img[rr, cc] * 0.6 + 0.4 * val
    elif weather == "snow":  # flakes: white specks, some bigger and close
        n = int(rng.integers(120, 260))
        rr = rng.integers(0, S - 1, n)
        cc = rng.integers(0, S - 1, n)
        val = {"day": 0.97, "dusk": 0.65, "night": 0.32}[illum]
        img[rr, cc] = img[rr, cc] * 0.2 + 0.8 * val
        big = rng.random(n) < 0.2
        for dr, dc in ((0, 1), (1, 0), (1, 1)):
            img[rr[big] + dr, cc[big] + dc] = img[rr[big] + dr, cc[big] + dc] * 0.3 + 0.7 * val

    # Sensor: exposure jitter, vignetting, noise (higher gain in the dark).
    img *= g.vign * np.float32(rng.uniform(0.93, 1.07))
    sigma = {"day": 0.012, "dusk": 0.022, "night": 0.032}[illum]
    img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    image = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    # Ground truth: visible pixels per object after painter's overdraw.
    visible = np.bincount(cv.ids[cv.ids >= 0].ravel(), minlength=len(objects))
    boxes, classes, tids, occ = [], [], [], []
    for i, (u0, v0, u1, v1), own in sorted(drawn, key=lambda r: -objects[r[0]].x):
        b = (max(0.0, u0), max(0.0, v0), min(float(S), u1), min(float(S), v1))
        occlusion = 1.0 - visible[i] / own
        if b[3] - b[1] < MIN_BOX_HEIGHT_PX or b[2] - b[0] < 1.0 or occlusion > MAX_OCCLUSION:
            continue
        boxes.append(b)
        classes.append(objects[i].cls)
        tids.append(objects[i].track_id)
        occ.append(occlusion)
    return CameraFrame(
        image=image,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=classes,
        track_ids=tids,
        occlusion=np.asarray(occ, np.float32),
    )


# --------------------------------------------------------------------------- #
# Lidar
# --------------------------------------------------------------------------- #

_LIDAR_REFL = {"car": 0.35, "truck": 0.45, "pedestrian": 0.2, "cyclist": 0.25, "traffic_cone": 0.8}
# Extinction coefficient (1/m) and spurious-return probability per ray.
_LIDAR_WEATHER = {"clear": (0.0, 0.0), "rain": (0.006, 0.012), "snow": (0.01, 0.04), "fog": (0.035, 0.08)}


def _boxes_array(objects: Sequence[SceneObject]) -> np.ndarray:
    """(n, 6) axis-aligned boxes: xmin, ymin, zmin, xmax, ymax, zmax."""
    out = np.empty((len(objects), 6), np.float64)
    for i, o in enumerate(objects):
        ex, ey, _ = _extents(o)
        out[i] = (o.x - ex / 2, o.y - ey / 2, 0.0, o.x + ex / 2, o.y + ey / 2, o.height)
    return out


def render_lidar(
    rng: np.random.Generator,
    objects: Sequence[SceneObject],
    odd: Odd,
    n_azimuth: int = 360,
    ego_s: float | None = None,
) -> np.ndarray:
    """One sweep of a roof-mounted 16-beam spinning lidar: float32 (n, 4) x, y, z, intensity.

    Points are in the ego frame (z from the ground). Rays are intersected
    exactly with the ground, roadside walls/guardrails and object boxes (slab
    test, vectorized over rays x boxes); weather attenuates returns with range
    and adds spurious near returns (fog backscatter, rain drops, snowflakes).
    """
    if ego_s is None:
        ego_s = float(rng.uniform(0.0, 1000.0))
    el = np.deg2rad(np.linspace(*LIDAR_FOV_DEG, LIDAR_BEAMS))
    az = (np.arange(n_azimuth) + rng.uniform()) * (2 * np.pi / n_azimuth)
    ce, se = np.cos(el)[:, None], np.sin(el)[:, None]
    d = np.stack(
        [np.broadcast_to(ce * np.cos(az), (LIDAR_BEAMS, n_azimuth)),
         np.broadcast_to(ce * np.sin(az), (LIDAR_BEAMS, n_azimuth)),
         np.broadcast_to(se, (LIDAR_BEAMS, n_azimuth))],
        axis=-1,
    ).reshape(-1, 3)
    d[np.abs(d) < 1e-9] = 1e-9
    o = np.array([0.0, 0.0, LIDAR_HEIGHT_M])
    n = len(d)
    t_hit = np.full(n, np.inf)
    inten = np.zeros(n)
    road = _ROADS[odd.road_type]
    snow, wet = odd.weather == "snow", odd.weather == "rain"

    down = d[:, 2] < 0
    tg = np.where(down, -LIDAR_HEIGHT_M / d[:, 2], np.inf)
    gx, gy = np.where(down, tg * d[:, 0], 0.0), np.where(down, tg * d[:, 1], 1e3)
    on_road = (gy >= road.road[0]) & (gy <= road.road[1])
    gi = np.where(on_road, 0.2 if snow else 0.08, 0.5 if snow else (0.18 if road.sidewalks else 0.25))
    for y0, hw, period, duty in road.markings:
        m = np.abs(gy - y0) < hw
        if period > 0:
            m &= np.mod(gx + ego_s, period) < duty * period
        gi = np.where(m, 0.25 if snow else 0.7, gi)
    if wet:
        gi = gi * 0.6
    t_hit, inten = tg, gi * (0.5 + 0.5 * np.abs(d[:, 2]))

    for yw, z0, z1 in road.walls:  # facades / guardrails as infinite vertical planes
        tw = yw / d[:, 1]
        zw = LIDAR_HEIGHT_M + tw * d[:, 2]
        ok = (tw > 0) & (zw >= z0) & (zw <= z1) & (tw < t_hit)
        t_hit = np.where(ok, tw, t_hit)
        inten = np.where(ok, (0.5 if z1 < 2 else 0.25) * (0.4 + 0.6 * np.abs(d[:, 1])), inten)

    if objects:
        bx = _boxes_array(objects)
        inv = 1.0 / d
        t1 = (bx[None, :, 0:3] - o) * inv[:, None, :]
        t2 = (bx[None, :, 3:6] - o) * inv[:, None, :]
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        tnear, tfar = tmin.max(axis=2), tmax.min(axis=2)
        hit = (tnear <= tfar) & (tnear > 0.1)
        tn = np.where(hit, tnear, np.inf)
        j = tn.argmin(axis=1)
        tb = tn[np.arange(n), j]
        closer = tb < t_hit
        axis = tmin[np.arange(n), j].argmax(axis=1)  # face the ray entered through
        cosi = np.abs(d[np.arange(n), axis])
        refl = np.array([_LIDAR_REFL[ob.cls] * (0.8 + 0.4 * _hash01(ob.track_id, 11)) for ob in objects])
        t_hit = np.where(closer, tb, t_hit)
        inten = np.where(closer, refl[j] * (0.4 + 0.6 * cosi), inten)

    alpha, p_spur = _LIDAR_WEATHER[odd.weather]
    keep = (t_hit < LIDAR_MAX_RANGE_M) & (rng.random(n) > 0.02)
    if alpha > 0:
        trans = np.exp(-2.0 * alpha * np.minimum(t_hit, 1e3))
        keep &= rng.random(n) < trans
        inten = inten * trans
    if p_spur > 0:
        spur = rng.random(n) < p_spur
        hi_r = {"fog": 8.0, "rain": 15.0, "snow": 20.0}[odd.weather]
        r_sp = rng.uniform(1.0, hi_r, n)
        spur &= r_sp < np.where(keep, t_hit, np.inf)
        lo_i, hi_i = (0.01, 0.06) if odd.weather == "fog" else (0.05, 0.35)
        t_hit = np.where(spur, r_sp, t_hit)
        inten = np.where(spur, rng.uniform(lo_i, hi_i, n), inten)
        keep |= spur
    r = t_hit[keep] + rng.normal(0.0, 0.02, int(keep.sum()))
    pts = o + d[keep] * r[:, None]
    return np.column_stack([pts, np.clip(inten[keep], 0.0, 1.0)]).astype(np.float32)


# --------------------------------------------------------------------------- #
# Radar
# --------------------------------------------------------------------------- #

_RCS_DBSM = {"car": 10.0, "truck": 20.0, "pedestrian": -8.0, "cyclist": -3.0, "traffic_cone": -12.0}
_RADAR_K_DB = 89.0  # radar-equation constant: a 10 dBsm car at 150 m gives ~12 dB SNR
_RADAR_THRESH_DB = 10.0


def _radar_det(rng: np.random.Generator, px: float, py: float, vrx: float, vry: float, rcs: float,
               loss_db: float) -> dict | None:
    r = math.hypot(px, py)
    if r < 0.5 or r > RADAR_MAX_RANGE_M:
        return None
    az = math.degrees(math.atan2(py, px))
    if abs(az) > RADAR_HALF_FOV_DEG:
        return None
    snr = rcs - 40.0 * math.log10(r) + _RADAR_K_DB - loss_db - 3.0 * (abs(az) / RADAR_HALF_FOV_DEG) ** 2
    snr += float(rng.normal(0.0, 1.5))
    if rng.random() > 1.0 / (1.0 + math.exp(-(snr - _RADAR_THRESH_DB) / 1.2)):
        return None
    rr = (vrx * px + vry * py) / r
    return {
        "range_m": r + float(rng.normal(0.0, 0.1)),
        "azimuth_deg": az + float(rng.normal(0.0, 0.3 + 0.5 * abs(az) / RADAR_HALF_FOV_DEG)),
        "range_rate_mps": rr + float(rng.normal(0.0, 0.1)),
        "rcs_dbsm": rcs + float(rng.normal(0.0, 1.0)),
        "snr_db": snr,
    }


def render_radar(
    rng: np.random.Generator, objects: Sequence[SceneObject], odd: Odd, ego_speed: float
) -> list[dict]:
    """Front radar detection list (range, azimuth, doppler, RCS, SNR), sorted by range.

    Detections come from the closest point of each box, with radial relative
    velocity as range rate (negative = approaching). SNR follows the radar
    equation (RCS - 40 log10 R); rain/snow cost only ~1 dB per 100 m, which is
    why radar is the sensor that still works when the camera does not.
    Large objects close by give extra detections; guardrails, facades and
    random false alarms add clutter.
    """
    loss_per_100m = {"clear": 0.0, "fog": 0.1, "rain": 1.0, "snow": 1.5}[odd.weather]
    dets: list[dict] = []
    spans = []
    for o in objects:
        ex, ey, _ = _extents(o)
        px = min(max(0.0, o.x - ex / 2), o.x + ex / 2)
        py = min(max(0.0, o.y - ey / 2), o.y + ey / 2)
        a0 = math.atan2(o.y - ey / 2, max(o.x - ex / 2, 0.1))
        a1 = math.atan2(o.y + ey / 2, max(o.x - ex / 2, 0.1))
        spans.append((math.hypot(px, py), a0, a1))
    for i, o in enumerate(objects):
        ex, ey, _ = _extents(o)
        r_i, a0, a1 = spans[i]
        ac = 0.5 * (a0 + a1)
        # Behind a nearer object the return only arrives via multipath: weaker.
        shadowed = any(r_j < r_i - 1.0 and b0 <= ac <= b1 for j, (r_j, b0, b1) in enumerate(spans) if j != i)
        rcs = _RCS_DBSM[o.cls] + 3.0 * (_hash01(o.track_id, 13) - 0.5) + float(rng.normal(0.0, 2.0))
        loss = loss_per_100m * math.hypot(o.x, o.y) / 100.0 + (8.0 if shadowed else 0.0)
        vrx, vry = o.vx - ego_speed, o.vy
        px = min(max(0.0, o.x - ex / 2), o.x + ex / 2)
        py = min(max(0.0, o.y - ey / 2), o.y + ey / 2)
        det = _radar_det(rng, px, py, vrx, vry, rcs, loss)
        if det is not None:
            dets.append(det)
        if o.cls in ("car", "truck") and r_i < 40.0:  # extended target: more scatterers
            for _ in range(int(rng.integers(0, 3 if o.cls == "truck" else 2))):
                qx = o.x - ex / 2 + float(rng.uniform(0.0, 0.4)) * ex
                qy = o.y + float(rng.uniform(-0.5, 0.5)) * ey
                det = _radar_det(rng, qx, qy, vrx, vry, rcs - 6.0, loss)
                if det is not None:
                    dets.append(det)
    road = _ROADS[odd.road_type]
    for yw, _, _ in road.walls:  # stationary roadside clutter
        for xq in rng.uniform(8.0, 90.0, int(rng.integers(2, 6))):
            det = _radar_det(rng, float(xq), yw, -ego_speed, 0.0, float(rng.uniform(0.0, 8.0)), 0.0)
            if det is not None:
                dets.append(det)
    for _ in range(int(rng.poisson(1.5))):  # false alarms near threshold
        r = float(rng.uniform(3.0, RADAR_MAX_RANGE_M))
        dets.append({
            "range_m": r,
            "azimuth_deg": float(rng.uniform(-RADAR_HALF_FOV_DEG, RADAR_HALF_FOV_DEG)),
            "range_rate_mps": float(rng.normal(-ego_speed * 0.5, 5.0)),
            "rcs_dbsm": float(rng.uniform(-15.0, 0.0)),
            "snr_db": float(rng.uniform(_RADAR_THRESH_DB, _RADAR_THRESH_DB + 4.0)),
        })
    dets.sort(key=lambda dd: dd["range_m"])
    return dets


# --------------------------------------------------------------------------- #
# Debug pictures
# --------------------------------------------------------------------------- #

CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "car": (0, 200, 255),
    "truck": (80, 120, 255),
    "pedestrian": (255, 40, 40),
    "cyclist": (255, 230, 0),
    "traffic_cone": (255, 140, 0),
}


def draw_boxes(frame: CameraFrame, scale: int = 4, labels: bool = True) -> np.ndarray:
    """Upsample (nearest) and outline the ground-truth boxes, for debugging and docs."""
    img = np.repeat(np.repeat(frame.image, scale, axis=0), scale, axis=1).copy()
    H, W = img.shape[:2]
    for (x0, y0, x1, y1), cls in zip(frame.boxes, frame.classes):
        c = np.array(CLASS_COLORS.get(cls, (255, 255, 255)), np.uint8)
        a0, b0 = int(round(x0 * scale)), int(round(y0 * scale))
        a1, b1 = min(W - 1, int(round(x1 * scale)) - 1), min(H - 1, int(round(y1 * scale)) - 1)
        img[b0:b1 + 1, [a0, a1]] = c
        img[[b0, b1], a0:a1 + 1] = c
    if labels and len(frame.classes):
        from PIL import Image, ImageDraw

        pim = Image.fromarray(img)
        dr = ImageDraw.Draw(pim)
        for (x0, y0, _, _), cls in zip(frame.boxes, frame.classes):
            tag = {"traffic_cone": "cone", "pedestrian": "ped"}.get(cls, cls)
            dr.text((int(x0 * scale) + 1, max(0, int(y0 * scale) - 11)), tag, fill=CLASS_COLORS[cls])
        img = np.asarray(pim)
    return img


def contact_sheet(frames: Sequence[np.ndarray | CameraFrame], cols: int, gap: int = 2) -> np.ndarray:
    """Tile images (or frames) into one grid picture; all tiles padded to the largest."""
    imgs = [f.image if isinstance(f, CameraFrame) else f for f in frames]
    if not imgs:
        return np.zeros((1, 1, 3), np.uint8)
    h = max(i.shape[0] for i in imgs)
    w = max(i.shape[1] for i in imgs)
    rows = math.ceil(len(imgs) / cols)
    sheet = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 24, np.uint8)
    for k, im in enumerate(imgs):
        r, c = divmod(k, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y:y + im.shape[0], x:x + im.shape[1]] = im[..., :3]
    return sheet
