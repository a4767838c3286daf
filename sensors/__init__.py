"""Sensors: outside signals (new files, returned reviews, drift, line changes) -> run requests."""

from sensors.landing_zone import landing_zone_sensor
from sensors.review_returns import review_returns_sensor

__all__ = ["landing_zone_sensor", "review_returns_sensor"]
