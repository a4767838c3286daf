"""A longitudinal/lateral vehicle model with slow component wear, sampled at 100 Hz.

It only has to be physical enough that telemetry behaves like a fleet's: braking
needs more hydraulic pressure as pads wear, a newer powertrain calibration recovers
more energy by regeneration (so friction brakes work less), a battery's internal
resistance grows with age and cold, and temperatures follow load and ambient.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime

import numpy as np

from avops.fleet.odd import Segment, segment_at

DT = 0.01  # s
MASS_KG = 2050.0
WHEEL_RADIUS_M = 0.35
STEER_RATIO = 15.0
WHEELBASE_M = 2.8
_AMBIENT = {"eu": (2.0, 22.0), "us": (8.0, 28.0), "cn": (5.0, 30.0)}
_TARGET_KPH = {"motorway": (105.0, 130.0), "rural": (65.0, 95.0), "urban": (25.0, 50.0)}


@dataclass(frozen=True)
class Calibration:
    """Powertrain calibration constants that differ between model years."""

    regen_limit_mps2: float  # deceleration recovered by the motor before friction brakes apply
    coolant_setpoint_c: float
    battery_setpoint_c: float
    brake_gain_bar_per_mps2: float
    upshift_kph: tuple[float, ...] = (12.0, 25.0, 40.0, 55.0, 72.0, 90.0)  # DSG: speeds for 2nd..7th gear


def gear_series(kph: np.ndarray, upshift_kph: tuple[float, ...], hysteresis_kph: float = 6.0) -> np.ndarray:
    """The engaged gear of a 7-speed dual-clutch box: up at ``upshift_kph``, down ``hysteresis_kph`` lower.

    Deterministic (no random draw), so adding it changed no other simulated value.
    """
    up = np.asarray(upshift_kph)
    gears = np.empty(len(kph))
    gear = 1
    for i, v in enumerate(kph):
        while gear <= len(up) and v >= up[gear - 1]:
            gear += 1
        while gear > 1 and v < up[gear - 2] - hysteresis_kph:
            gear -= 1
        gears[i] = gear
    return gears


def calibration_for(model_year: int, calibration_id: str | None = None) -> Calibration:
    """The 2024+ recalibration blends in more regeneration and runs warmer for efficiency.

    ``calibration_id`` (``PTC-<platform>-<YY>.<rev>``, the fleet registry's
    ``powertrain_calibration``) wins over the model year: an older vehicle that received the
    new calibration over the air behaves like the new one.
    """
    year = model_year
    if calibration_id:
        m = re.match(r"^PTC-[A-Z0-9]+-(\d{2})\.\d+$", calibration_id)
        if m is None:
            raise ValueError(f"powertrain calibration {calibration_id!r} is not PTC-<platform>-<YY>.<revision>")
        year = 2000 + int(m.group(1))
    if year >= 2024:  # and shifts up earlier (lower revs)
        return Calibration(1.9, 96.0, 30.0, 11.0, (10.0, 21.0, 34.0, 47.0, 62.0, 78.0))
    return Calibration(1.1, 90.0, 25.0, 12.5)


@dataclass(frozen=True)
class WearState:
    """Component health of one vehicle; ground truth, never on the bus directly."""

    odometer_km: float
    brake_pad_mm: float  # 12 mm new, replace at 3 mm
    battery_resistance_mohm: float
    battery_capacity_fade: float  # fraction of capacity lost
    soc_pct: float

    def to_dict(self) -> dict:
        return asdict(self)


def initial_wear(rng: np.random.Generator, model_year: int, when: datetime) -> WearState:
    age_years = max(0.2, when.year + when.month / 12 - model_year)
    km = float(age_years * rng.uniform(9000, 18000))
    return WearState(
        odometer_km=km,
        brake_pad_mm=float(max(3.5, 12.0 - km / 9000 * rng.uniform(0.7, 1.3))),
        battery_resistance_mohm=float(90.0 * (1 + 0.045 * age_years) * rng.uniform(0.95, 1.05)),
        battery_capacity_fade=float(min(0.3, 0.022 * age_years * rng.uniform(0.8, 1.2))),
        soc_pct=float(rng.uniform(55, 95)),
    )


def age_between_drives(rng: np.random.Generator, wear: WearState, days: float) -> WearState:
    """Unlogged everyday driving between two logged drives wears the components."""
    km = float(days * rng.uniform(25, 55))
    pad = wear.brake_pad_mm - km / 9000 * rng.uniform(0.7, 1.3)
    if pad < 3.2:  # workshop visit: new pads (ground truth records it via the jump)
        pad = 12.0
    return replace(
        wear,
        odometer_km=wear.odometer_km + km,
        brake_pad_mm=float(pad),
        battery_resistance_mohm=wear.battery_resistance_mohm * (1 + 0.045 * days / 365),
        battery_capacity_fade=min(0.35, wear.battery_capacity_fade + 0.022 * days / 365),
        soc_pct=float(rng.uniform(45, 95)),
    )


def ambient_temp(region: str, when: datetime) -> float:
    winter, summer = _AMBIENT.get(region, _AMBIENT["eu"])
    season = (1 - math.cos(2 * math.pi * (when.month - 1 + when.day / 31) / 12)) / 2  # 0 Jan, 1 Jul
    diurnal = 4.0 * math.sin(2 * math.pi * (when.hour - 9) / 24)
    return winter + (summer - winter) * season + diurnal


def simulate_signals(
    rng: np.random.Generator,
    segments: list[Segment],
    duration_s: float,
    start: datetime,
    region: str,
    model_year: int,
    wear: WearState,
    calibration_id: str | None = None,
) -> tuple[dict[str, np.ndarray], WearState]:
    """Return quantity time series at 100 Hz (key ``t``: seconds from start) and the wear after the drive."""
    cal = calibration_for(model_year, calibration_id)
    n = int(round(duration_s / DT))
    t = np.arange(n) * DT
    amb = ambient_temp(region, start) + rng.normal(0, 1.0)
    warm_start = rng.random() < 0.4

    v = float(rng.uniform(0, 15))  # m/s
    target = v
    stop_until = -1.0
    steer_state = 0.0
    speed = np.empty(n)
    accel = np.empty(n)
    steer = np.empty(n)
    seg_idx = -1
    for i in range(n):
        ti = t[i]
        seg = segment_at(segments, ti)
        if seg_idx < 0 or seg is not segments[seg_idx]:
            seg_idx = segments.index(seg)
            lo, hi = _TARGET_KPH[seg.odd.road_type]
            kph = rng.uniform(lo, hi) * (0.6 if seg.odd.roadworks else 1.0)
            kph *= 0.8 if seg.odd.weather in ("snow", "fog") else 1.0
            target = kph / 3.6
        if seg.odd.road_type == "urban" and ti > stop_until + 8 and rng.random() < 0.0025:
            stop_until = ti + rng.uniform(3, 10)  # traffic light
        goal = 0.0 if ti < stop_until else target
        a = np.clip(0.6 * (goal - v), -3.5 if goal == 0 else -2.5, 2.0) + rng.normal(0, 0.05)
        v = max(0.0, v + a * DT)
        speed[i] = v
        accel[i] = a if v > 0 else 0.0
        sigma = {"urban": 25.0, "rural": 10.0, "motorway": 3.0}[seg.odd.road_type]
        steer_state += -0.5 * steer_state * DT + sigma * math.sqrt(DT) * rng.normal()
        steer[i] = steer_state / (1 + v / 15)

    # Friction braking: what regeneration cannot recover; worn pads need more pressure.
    decel = np.clip(-accel, 0, None)
    friction_decel = np.clip(decel - cal.regen_limit_mps2 * np.clip(speed / 5, 0, 1), 0, None)
    pad_factor = 1 + 0.55 * (1 - wear.brake_pad_mm / 12.0)
    brake_pressure = friction_decel * cal.brake_gain_bar_per_mps2 * pad_factor + np.abs(rng.normal(0, 0.15, n))
    brake_pressure[friction_decel <= 0] = np.abs(rng.normal(0, 0.1, int((friction_decel <= 0).sum())))
    brake_torque = friction_decel * MASS_KG * WHEEL_RADIUS_M * pad_factor

    # Wheels: common speed, lateral difference in curves, sensor noise.
    kph = speed * 3.6
    yaw = np.radians(steer) / STEER_RATIO * speed / WHEELBASE_M
    diff = yaw * 0.8 * 3.6  # track half-width 0.8 m
    noise = lambda: rng.normal(0, 0.08, n)  # noqa: E731
    wheels = {
        "wheel_fl_kph": np.clip(kph - diff + noise(), 0, None),
        "wheel_fr_kph": np.clip(kph + diff + noise(), 0, None),
        "wheel_rl_kph": np.clip(kph - diff + noise(), 0, None),
        "wheel_rr_kph": np.clip(kph + diff + noise(), 0, None),
    }

    # Traction battery: power -> current; voltage sags with (ageing, cold) resistance.
    power_w = MASS_KG * accel * speed + 0.5 * 1.2 * 0.65 * speed**3 + 0.011 * MASS_KG * 9.81 * speed
    power_w = np.where(power_w < 0, power_w * 0.7, power_w / 0.9) + 400.0
    capacity_ah = 240.0 * (1 - wear.battery_capacity_fade)
    r_ohm = wear.battery_resistance_mohm / 1000 * (1 + max(0.0, 15 - amb) * 0.02)
    soc = wear.soc_pct
    ocv = 330 + 70 * soc / 100
    current = power_w / ocv
    soc_series = soc - np.cumsum(current) * DT / 3600 / capacity_ah * 100
    voltage = 330 + 70 * soc_series / 100 - current * r_ohm
    heat = np.cumsum(current**2 * r_ohm) * DT
    hv_temp = amb + (cal.battery_setpoint_c - amb) * (1 - np.exp(-t / 900)) * 0.3 + heat / 4.0e5

    coolant0 = cal.coolant_setpoint_c - rng.uniform(0, 5) if warm_start else amb
    coolant = cal.coolant_setpoint_c + (coolant0 - cal.coolant_setpoint_c) * np.exp(-t / 240)
    load = np.convolve(np.abs(power_w), np.ones(500) / 500, mode="same") / 1000
    motor_temp = coolant * 0.6 + amb * 0.4 + load * 0.35
    steer_rate = np.gradient(steer, DT)

    series = {
        "t": t,
        "speed_kph": kph,
        "accel_long_mps2": accel,
        **wheels,
        "brake_pressure_bar": brake_pressure,
        "brake_torque_nm": brake_torque,
        "brake_pedal": (friction_decel > 0.05).astype(float),
        "steering_angle_deg": steer,
        "steering_rate_dps": steer_rate,
        "coolant_temp_c": coolant + rng.normal(0, 0.2, n),
        "motor_temp_c": motor_temp,
        "inverter_temp_c": motor_temp * 0.8 + amb * 0.2,
        "gearbox_temp_c": amb + (coolant - amb) * 0.8,
        "gear": gear_series(kph, cal.upshift_kph),
        "ambient_temp_c": np.full(n, amb),
        "hv_voltage_v": voltage,
        "hv_current_a": current,
        "hv_temp_c": hv_temp,
        "soc_pct": soc_series,
    }
    km = float(speed.sum() * DT / 1000)
    braking_j = float((friction_decel * speed).sum() * DT * MASS_KG)
    after = replace(
        wear,
        odometer_km=wear.odometer_km + km,
        brake_pad_mm=max(0.0, wear.brake_pad_mm - braking_j * 2.5e-9),
        soc_pct=float(soc_series[-1]),
    )
    return series, after
