"""Sensors: outside signals (new files, returned reviews, drift, line changes) -> run requests."""

from sensors.battery import battery_drift_sensor, bms_landing_sensor
from sensors.drift import drift_sensor, maintenance_retrain_schedule
from sensors.gpu_routing import gpu_routing_sensor
from sensors.landing_zone import landing_zone_sensor
from sensors.lines import fp_rate_sensor, line_change_sensor
from sensors.review_returns import review_returns_sensor
from sensors.rollout import rollout_sensor

__all__ = ["battery_drift_sensor", "bms_landing_sensor", "drift_sensor", "fp_rate_sensor", "line_change_sensor", "maintenance_retrain_schedule", "gpu_routing_sensor", "landing_zone_sensor", "review_returns_sensor", "rollout_sensor"]
