"""Telemetry feature definitions: each one written once, computed offline and online from it.

A feature is (name, entity = vehicle, event time = the CAN sample's timestamp, trailing
window, aggregation, row expression over canonical quantities, optional row filter). Its
version is a digest of exactly that, so editing a definition changes its version, the
catalog's version, and so the Dagster code version of every feature table (stale in the UI).

Quantities are the canonical names of ``config/can_signals.yaml``; a platform whose bus does
not carry a quantity simply has no such feature (listed as unavailable, never filled in).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from avops.features.expr import Expr, greatest, least, q

DAY_S = 86_400.0
AGGREGATIONS = ("mean", "std", "min", "max", "p95", "frac", "count")
ENTITY = "vehicle_id"
EVENT_TIME = "timestamp"


@dataclass(frozen=True)
class FeatureDef:
    """One feature: ``agg`` over ``expr`` for the rows of one vehicle in ``(as_of - window_s, as_of]``."""

    name: str
    expr: Expr
    agg: str
    window_s: float = DAY_S
    where: Expr | None = None
    description: str = ""
    clock: str | None = None  # rows are this quantity's samples; other messages join as of them
    asof_tolerance_s: float = 0.05  # a joined sample older than this (relative to the row) is missing

    def __post_init__(self) -> None:
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"feature {self.name}: aggregation {self.agg!r} is not one of {AGGREGATIONS}")
        if self.window_s <= 0:
            raise ValueError(f"feature {self.name}: window must be positive, got {self.window_s}")

    def canonical(self) -> str:
        joined = f"|clock={self.clock}|tol={self.asof_tolerance_s!r}" if self.clock else ""
        return f"{self.name}|{ENTITY}|{EVENT_TIME}|{self.agg}|{self.window_s!r}|{self.expr!r}|{self.where!r}{joined}"

    @property
    def version(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    def quantities(self) -> set[str]:
        return self.expr.names() | (self.where.names() if self.where is not None else set())


def catalog_version(features: list[FeatureDef]) -> str:
    """One digest for a feature set: the Dagster code version of the tables computed from it."""
    return hashlib.sha256("\n".join(f.canonical() for f in features).encode()).hexdigest()[:12]


_WHEELS = [q("wheel_fl_kph"), q("wheel_fr_kph"), q("wheel_rl_kph"), q("wheel_rr_kph")]
_BRAKING = q("brake_pressure_bar") > 1.0
_DECEL = q("accel_long_mps2") * -1.0
_FIRM_BRAKING = _BRAKING & (_DECEL > 0.5)
_MOVING = q("speed_kph") > 5.0
WEAR_WINDOW_S = 45 * DAY_S  # pads wear over months; a long window gathers enough braking to see it

TELEMETRY_FEATURES: list[FeatureDef] = [
    FeatureDef("brake_pressure_braking_mean", q("brake_pressure_bar"), "mean", where=_BRAKING,
               description="mean hydraulic pressure while braking (bar); worn pads need more"),
    FeatureDef("brake_decel_braking_mean", _DECEL, "mean", where=_FIRM_BRAKING, window_s=WEAR_WINDOW_S, clock="brake_pressure_bar",
               description="mean deceleration while braking firmly (m/s², longitudinal acceleration as of each pressure sample)"),
    FeatureDef("brake_pressure_per_decel", q("brake_pressure_bar") / _DECEL, "mean", where=_FIRM_BRAKING, window_s=WEAR_WINDOW_S, clock="brake_pressure_bar",
               description="hydraulic pressure per m/s² of deceleration while braking firmly (bar·s²/m): pads lose friction as they wear"),
    FeatureDef("brake_torque_per_decel", q("brake_torque_nm") / _DECEL, "mean", where=(q("brake_torque_nm") > 50.0) & (_DECEL > 0.5),
               window_s=WEAR_WINDOW_S, clock="brake_torque_nm", description="friction torque per m/s² of deceleration while braking (Nm·s²/m)"),
    FeatureDef("brake_pressure_p95", q("brake_pressure_bar"), "p95", description="95th percentile brake pressure (bar)"),
    FeatureDef("hard_braking_share", q("brake_pressure_bar") > 15.0, "frac", description="share of samples above 15 bar"),
    FeatureDef("brake_torque_braking_mean", q("brake_torque_nm"), "mean", where=q("brake_torque_nm") > 50.0,
               description="mean friction brake torque while braking (Nm)"),
    FeatureDef("wheel_speed_spread_p95", greatest(*_WHEELS) - least(*_WHEELS), "p95",
               description="95th percentile of the spread between the four wheel speeds (km/h): slip, tyres, curves"),
    FeatureDef("coolant_temp_max", q("coolant_temp_c"), "max", description="peak coolant temperature (°C)"),
    FeatureDef("motor_temp_mean", q("motor_temp_c"), "mean", description="mean motor temperature (°C)"),
    FeatureDef("motor_temp_max", q("motor_temp_c"), "max", description="peak motor temperature (°C)"),
    FeatureDef("gearbox_temp_mean", q("gearbox_temp_c"), "mean", description="mean transmission sump temperature (°C)"),
    # shift patterns (dual-clutch platforms; an EV's single-speed drive has no gear on the bus): how the box is used
    FeatureDef("gear_moving_mean", q("gear"), "mean", where=_MOVING, clock="gear",
               description="mean engaged gear while moving: the shift schedule and the duty cycle together"),
    FeatureDef("low_gear_share", q("gear") < 2.5, "frac", where=_MOVING, clock="gear",
               description="share of moving time in 1st or 2nd gear: stop-and-go, launch wear on the clutches"),
    FeatureDef("top_gear_share", q("gear") > 5.5, "frac", where=_MOVING, clock="gear",
               description="share of moving time in 6th or 7th gear: motorway cruising"),
    FeatureDef("inverter_temp_max", q("inverter_temp_c"), "max", description="peak inverter temperature (°C)"),
    FeatureDef("ambient_temp_mean", q("ambient_temp_c"), "mean", description="mean outside temperature (°C)"),
    FeatureDef("hv_temp_mean", q("hv_temp_c"), "mean", description="mean traction battery temperature (°C)"),
    FeatureDef("hv_temp_max", q("hv_temp_c"), "max", description="peak traction battery temperature (°C)"),
    FeatureDef("hv_voltage_mean", q("hv_voltage_v"), "mean", description="mean pack voltage (V)"),
    FeatureDef("hv_voltage_std", q("hv_voltage_v"), "std", description="pack voltage variation (V): sag under load grows with resistance"),
    FeatureDef("hv_voltage_min", q("hv_voltage_v"), "min", description="lowest pack voltage (V)"),
    FeatureDef("hv_current_mean", q("hv_current_a"), "mean", description="mean pack current (A)"),
    FeatureDef("speed_mean", q("speed_kph"), "mean", description="mean vehicle speed (km/h)"),
    FeatureDef("samples", q("speed_kph"), "count", description="speed samples in the window (coverage)"),
]



@dataclass(frozen=True)
class DriftSignal:
    """A row-level signal the drift monitor compares: every sample of ``expr`` where ``where`` holds.

    Rows, not window aggregates: a drift test wants the distribution the model's inputs are
    computed from, at telemetry rate (thousands of samples a drive, not one).
    """

    name: str
    expr: Expr
    where: Expr | None = None
    clock: str | None = None
    asof_tolerance_s: float = 0.05
    agg: str = "rows"
    window_s: float = 0.0


DRIFT_SIGNALS: list[DriftSignal] = [
    *(DriftSignal(name, q(name)) for name in ("ambient_temp_c", "coolant_temp_c", "motor_temp_c", "gearbox_temp_c",
                                              "inverter_temp_c", "hv_temp_c", "hv_voltage_v", "hv_current_a", "speed_kph")),
    DriftSignal("brake_pressure_braking", q("brake_pressure_bar"), where=_BRAKING),
    DriftSignal("brake_pressure_per_decel", q("brake_pressure_bar") / _DECEL, where=_FIRM_BRAKING, clock="brake_pressure_bar"),
    DriftSignal("brake_torque_braking", q("brake_torque_nm"), where=q("brake_torque_nm") > 50.0),
    DriftSignal("wheel_speed_spread", greatest(*_WHEELS) - least(*_WHEELS)),
]
