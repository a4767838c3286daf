"""Sensors: outside signals (new files, drift, line changes) -> run requests."""

from sensors.landing_zone import landing_zone_sensor

__all__ = ["landing_zone_sensor"]
