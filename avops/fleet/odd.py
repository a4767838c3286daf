"""Operational design domain (ODD) conditions of simulated drives.

Named after ISO 34503's groups (scenery: road type, roadworks; environment: weather,
illumination). Distributions depend on region, month and hour so that later stages
see real slices (night x rain) and real drift (winter vs. summer, EU vs. CN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from avops.fleet.scene import Odd

ILLUMINATION = ("day", "dusk", "night")
WEATHER = ("clear", "rain", "fog", "snow")
ROAD_TYPES = ("motorway", "urban", "rural")

# Weather probabilities (clear, rain, fog, snow) per region for winter and summer;
# months in between are interpolated along a cosine over the year.
_WEATHER = {
    "eu": {"winter": (0.45, 0.30, 0.12, 0.13), "summer": (0.72, 0.22, 0.05, 0.01)},
    "us": {"winter": (0.62, 0.20, 0.06, 0.12), "summer": (0.85, 0.12, 0.03, 0.00)},
    "cn": {"winter": (0.48, 0.12, 0.30, 0.10), "summer": (0.52, 0.38, 0.10, 0.00)},
}
_LATITUDE = {"eu": 50.0, "us": 38.0, "cn": 32.0}
_ROAD_MIX = {"eu": (0.30, 0.45, 0.25), "us": (0.45, 0.30, 0.25), "cn": (0.25, 0.60, 0.15)}


@dataclass(frozen=True)
class Segment:
    """A stretch of a drive with constant ODD conditions (times in seconds from drive start)."""

    t_start: float
    t_end: float
    odd: Odd
    vru_density: float  # expected vulnerable road users in view; ground truth only


def daylight_hours(region: str, month: int) -> tuple[float, float]:
    """Approximate sunrise and sunset (local hours) from latitude and month."""
    lat = math.radians(_LATITUDE.get(region, 45.0))
    decl = math.radians(23.44) * math.sin(2 * math.pi * (month - 3.7) / 12)
    x = -math.tan(lat) * math.tan(decl)
    half = math.degrees(math.acos(max(-1.0, min(1.0, x)))) / 15.0
    return 12.0 - half, 12.0 + half


def illumination_at(region: str, when: datetime) -> str:
    sunrise, sunset = daylight_hours(region, when.month)
    hour = when.hour + when.minute / 60
    if sunrise + 0.75 <= hour <= sunset - 0.75:
        return "day"
    if sunrise - 0.5 <= hour <= sunrise + 0.75 or sunset - 0.75 <= hour <= sunset + 0.5:
        return "dusk"
    return "night"


def weather_probs(region: str, month: int) -> np.ndarray:
    table = _WEATHER.get(region, _WEATHER["eu"])
    winterness = (1 + math.cos(2 * math.pi * (month - 1) / 12)) / 2  # 1 in January, 0 in July
    p = winterness * np.array(table["winter"]) + (1 - winterness) * np.array(table["summer"])
    return p / p.sum()


def sample_start_hour(rng: np.random.Generator) -> float:
    """Commute peaks, midday errands, evening and some night driving."""
    mode = rng.choice(5, p=[0.28, 0.25, 0.27, 0.14, 0.06])
    centre = (8.3, 12.5, 17.2, 21.0, 1.5)[mode]
    return float((centre + rng.normal(0, 1.3)) % 24)


def sample_segments(rng: np.random.Generator, region: str, start: datetime, duration_s: float) -> list[Segment]:
    """Split a drive into segments with road type (Markov), roadworks, weather and light."""
    weather = str(rng.choice(WEATHER, p=weather_probs(region, start.month)))
    road = str(rng.choice(ROAD_TYPES, p=_ROAD_MIX.get(region, _ROAD_MIX["eu"])))
    segments: list[Segment] = []
    t = 0.0
    while t < duration_s:
        length = float(rng.uniform(12, 30))
        t_end = min(duration_s, t + length)
        now = start.timestamp() + t
        illum = illumination_at(region, datetime.fromtimestamp(now, tz=start.tzinfo))
        roadworks = bool(rng.random() < (0.18 if road != "urban" else 0.12))
        vru = {"urban": 1.6, "rural": 0.3, "motorway": 0.02}[road] * (0.4 if weather in ("rain", "snow") else 1.0)
        vru *= 0.5 if illum == "night" else 1.0
        segments.append(Segment(t, t_end, Odd(illum, weather, road, roadworks), vru))
        t = t_end
        if rng.random() < 0.35:  # change road type
            road = str(rng.choice(ROAD_TYPES, p=_ROAD_MIX.get(region, _ROAD_MIX["eu"])))
        if rng.random() < 0.08:  # weather changes occasionally within a drive
            weather = str(rng.choice(WEATHER, p=weather_probs(region, start.month)))
    return segments


def segment_at(segments: list[Segment], t: float) -> Segment:
    for s in segments:
        if s.t_start <= t < s.t_end:
            return s
    return segments[-1]
