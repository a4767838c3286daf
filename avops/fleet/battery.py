"""The simulated battery fleets: PyBaMM cells per vehicle and storage unit, delivered as BMS logs.

Vehicle fleets are the cohorts of the fleet registry (one traction-pack cell per vehicle unless
the profile asks for more); stationary storage fleets come from ``config/battery.yaml`` only.
Each cell's reference tests land as BMS logs (``avops.battery.bms_log``) with the measurement
resolution of a BMS front end; the clean simulated capacities go to ``sim_truth/battery`` (tests
only). Cells run in parallel processes; a rerun hits the content-addressed PyBaMM cache.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from avops.battery.aging import STEPS, CellSpec, ReferenceTest, cached_cell, cell_specs
from avops.battery.bms_log import BmsTest, encode, file_name
from avops.battery.config import BatteryConfig
from avops.fleet_registry import FleetRegistry
from avops.home import HomeLayout
from avops.store import atomic_write_bytes, atomic_write_json


@dataclass
class CellResult:
    spec: CellSpec
    tests: int
    cached: bool
    written: int


def fleet_units(config: BatteryConfig, registry: FleetRegistry, fleet_id: str, stationary_units: int) -> list[str]:
    f = config.fleet(fleet_id)
    if f.kind == "vehicle":
        return registry.cohort(fleet_id).vehicle_ids()
    return [f"{fleet_id}-unit{i:02d}" for i in range(f.units if f.units is not None else stationary_units)]


def test_times(spec: CellSpec, cycles_per_day: float, start: datetime, seed: int) -> list[datetime]:
    rng = np.random.default_rng([seed, 7, *(ord(c) for c in spec.cell_id)])
    day0 = start + timedelta(days=float(rng.uniform(0, 5)))
    return [(day0 + timedelta(days=k * spec.reference_every / cycles_per_day + float(rng.uniform(-0.5, 0.5))))
            .replace(microsecond=0) for k in range(spec.reference_tests)]


def measured(spec: CellSpec, test: ReferenceTest, when: datetime, seed: int) -> BmsTest:
    """The test as the BMS front end records it: quantised, with sensor noise (seeded per test)."""
    rng = np.random.default_rng([seed, 11, test.index, *(ord(c) for c in spec.cell_id)])
    v = np.round((test.voltage_v + rng.normal(0, 0.0003, test.voltage_v.shape)) / 1e-4) * 1e-4
    i = np.round(test.current_a / 1e-3) * 1e-3
    t = np.round(test.temperature_c + rng.normal(0, 0.1, test.temperature_c.shape), 1)
    return BmsTest(spec.fleet, spec.unit_id, spec.cell_id, spec.chemistry, when, test.usage_cycles, test.time_s, i, v, t,
                   np.asarray(STEPS, dtype=object)[test.step])


def _pulse_resistance(test: ReferenceTest) -> float:
    pulse = np.flatnonzero(test.step == STEPS.index("pulse"))
    before, end = pulse[0] - 1, pulse[-1]
    return float((test.voltage_v[before] - test.voltage_v[end]) / (test.current_a[end] - test.current_a[before]) * 1000.0)


@dataclass(frozen=True)
class PackAging:
    """How one vehicle's traction pack aged, from its cell's simulated life: for the drive simulator."""

    times: np.ndarray  # epoch seconds of the cell's reference tests
    capacity_rel: np.ndarray  # capacity / first capacity
    resistance_rel: np.ndarray  # pulse resistance / first
    digest: str

    def at(self, when: datetime) -> tuple[float, float]:
        """(capacity fade, resistance factor) at ``when`` (held at the ends of the simulated life)."""
        t = when.timestamp()
        return (float(1 - np.interp(t, self.times, self.capacity_rel)), float(np.interp(t, self.times, self.resistance_rel)))


def pack_aging(home: HomeLayout, fleet: str) -> dict[str, PackAging]:
    """Per vehicle of a fleet whose batteries were simulated: its first cell's aging (empty if none were).

    The drive simulator reads this so that the pack voltage, current and temperature on the CAN bus
    age with the same cell the BMS logs describe (simulator-side only: it reads the simulator's truth).
    """
    import hashlib
    import json

    path = home.sim_truth / "battery" / f"{fleet}.json"
    if not path.exists():
        return {}
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    out: dict[str, PackAging] = {}
    for cell in sorted(json.loads(raw)["cells"], key=lambda c: c["spec"]["cell_id"]):
        unit = cell["spec"]["unit_id"]
        tests = sorted(cell["tests"], key=lambda r: r["started_at"])
        if unit in out or len(tests) < 2 or "r_pulse_mohm" not in tests[0]:
            continue
        times = np.array([datetime.fromisoformat(r["started_at"]).timestamp() for r in tests])
        cap = np.array([r["capacity_ah"] for r in tests])
        res = np.array([r["r_pulse_mohm"] for r in tests])
        out[unit] = PackAging(times, cap / cap[0], res / res[0], digest)
    return out


def _run(args: tuple[CellSpec, str]) -> tuple[CellSpec, list[ReferenceTest], bool]:
    spec, cache = args
    tests, hit = cached_cell(spec, Path(cache))
    return spec, tests, hit


def simulate_batteries(config: BatteryConfig, registry: FleetRegistry, home: HomeLayout, profile: str = "demo",
                       fleets: list[str] | None = None, workers: int = 2, until: datetime | None = None,
                       progress: Callable[[CellResult], None] | None = None) -> list[CellResult]:
    """Simulate every cell of the selected fleets into ``home.bms`` (tests after ``until`` are not delivered yet)."""
    prof = config.profile(profile)
    start = datetime.fromisoformat(config.start_date).replace(tzinfo=timezone.utc)
    specs: list[CellSpec] = []
    for fid in fleets or list(config.fleets):
        f = config.fleet(fid)
        units = fleet_units(config, registry, fid, prof.stationary_units)
        specs += cell_specs(config, f, units, prof.cells_per_unit, prof.reference_every, prof.reference_tests, config.seed)
    cache = str(home.cache / "battery")
    results: list[CellResult] = []
    truth: dict[str, list] = {}

    def handle(spec: CellSpec, tests: list[ReferenceTest], hit: bool) -> None:
        usage = config.fleet(spec.fleet)
        written = 0
        rows = []
        for test, when in zip(tests, test_times(spec, usage.cycles_per_day, start, config.seed)):
            rows.append({"test": test.index, "started_at": when.isoformat(), "usage_cycles": test.usage_cycles,
                         "capacity_ah": test.capacity_ah, "r_pulse_mohm": _pulse_resistance(test)})
            if until is not None and when > until:
                continue
            path = home.bms / spec.fleet / spec.unit_id / file_name(spec.cell_id, when)
            if not path.exists():  # a delivered log is never rewritten
                atomic_write_bytes(path, encode(measured(spec, test, when, config.seed)))
                written += 1
        truth.setdefault(spec.fleet, []).append({"spec": asdict(spec), "tests": rows})
        r = CellResult(spec, len(tests), hit, written)
        results.append(r)
        if progress:
            progress(r)

    todo = [(s, cache) for s in specs]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            for spec, tests, hit in pool.map(_run, todo):
                handle(spec, tests, hit)
    else:
        for item in todo:
            handle(*_run(item))
    for fid, cells in truth.items():
        atomic_write_json(home.sim_truth / "battery" / f"{fid}.json", {"cells": cells})
    return results
