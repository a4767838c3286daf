"""Simulated workshop visits: what a dealer management system records, apart from telemetry.

Vehicles visit a workshop every few months. The mechanic measures the brake pads (to 0.1 mm,
with a measurement error) and replaces them at or below the wear limit; the service order
reaches the OEM's backend days to weeks later (dealer systems sync in batches). These records
are the maintenance model's labels, so they live in their own export, never on the bus, and a
replacement changes the vehicle's wear for every later drive (the telemetry sees new pads).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from avops.fleet.vehicle import WearState
from avops.maintenance.service import SERVICE_COLUMNS

WEAR_LIMIT_MM = 4.0  # pads measured at or below this are replaced
NEW_PAD_MM = 12.0


@dataclass(frozen=True)
class ServiceOrder:
    order_id: str
    vehicle_id: str
    workshop_id: str
    visit_time: datetime
    recorded_at: datetime
    odometer_km: float
    operation: str  # inspection | replaced
    component: str
    measured_mm: float

    def row(self) -> list:
        return [self.order_id, self.vehicle_id, self.workshop_id, self.visit_time.isoformat(), self.recorded_at.isoformat(),
                f"{self.odometer_km:.0f}", self.operation, self.component, f"{self.measured_mm:.1f}"]


def _interpolate(a: tuple[datetime, WearState], b: tuple[datetime, WearState] | None, when: datetime) -> tuple[float, float]:
    """Pad thickness and odometer at ``when`` between two planned drives (extrapolated after the last)."""
    (ta, wa) = a
    if b is None:
        days = (when - ta).total_seconds() / 86400
        return wa.brake_pad_mm - days * 40 / 9000, wa.odometer_km + days * 40
    tb, wb = b
    frac = (when - ta) / (tb - ta)
    pad = wa.brake_pad_mm + (wb.brake_pad_mm - wa.brake_pad_mm) * frac if wb.brake_pad_mm <= wa.brake_pad_mm else wa.brake_pad_mm
    return pad, wa.odometer_km + (wb.odometer_km - wa.odometer_km) * frac


def plan_visits(rng: np.random.Generator, vehicle_id: str, plan: list[tuple[datetime, WearState]],
                until: datetime) -> tuple[list[tuple[datetime, WearState]], list[ServiceOrder]]:
    """Workshop visits along a vehicle's drive plan, and the plan with replaced pads applied."""
    if not plan:
        return plan, []
    plan = list(plan)
    orders: list[ServiceOrder] = []
    when = plan[0][0] + timedelta(days=float(rng.uniform(10, 80)))
    workshop = f"WS-{int(rng.integers(100, 999))}"
    n = 0
    while when <= until:
        i = max(k for k, (t, _) in enumerate(plan) if t <= when) if when >= plan[0][0] else 0
        pad, odo = _interpolate(plan[i], plan[i + 1] if i + 1 < len(plan) else None, when)
        measured = round(max(0.0, pad + float(rng.normal(0, 0.3))), 1)
        replaced = measured <= WEAR_LIMIT_MM
        n += 1
        orders.append(ServiceOrder(f"{vehicle_id}-SO{n:03d}", vehicle_id, workshop, when,
                                   when + timedelta(days=float(rng.uniform(1, 21))), odo, "replaced" if replaced else "inspection",
                                   "brake_pads", measured))
        if replaced:  # every later drive runs on new pads, worn from the visit on
            for k in range(i + 1, len(plan)):
                t, w = plan[k]
                plan[k] = (t, replace(w, brake_pad_mm=min(NEW_PAD_MM, w.brake_pad_mm + NEW_PAD_MM - pad)))
        when += timedelta(days=float(rng.uniform(60, 120)))
    return plan, orders


def service_orders_csv(orders: list[ServiceOrder]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SERVICE_COLUMNS)
    for o in sorted(orders, key=lambda o: (o.recorded_at, o.order_id)):
        w.writerow(o.row())
    return buf.getvalue().encode()
