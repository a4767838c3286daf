"""Physically based cell aging with PyBaMM: a single-particle model with SEI growth, per cell.

The simulator's physics (only the fleet simulator imports this): each cell gets its own SEI rate
constant and electrode area (capacity), its fleet's temperature and usage (fast-charge share,
depth of discharge), and a low-rate reference test every ``reference_every`` usage cycles: a
rest, a 1C current pulse (internal resistance), a C/10 capacity discharge and a C/10 charge (the
near-equilibrium curve incremental capacity analysis needs). A run is cached content-addressed
under ``AVOPS_HOME/cache/battery`` by everything that determines it, so a rerun costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avops.battery.config import BatteryConfig, Chemistry, FleetUsage
from avops.store import atomic_write_bytes

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")  # before any import of pybamm: never reach the network

AGING_VERSION = "1"
STEPS = ("rest", "pulse", "relax", "capacity_discharge", "rest_empty", "slow_charge", "cv_hold")
GAS_CONSTANT = 8.314462618


@dataclass(frozen=True)
class CellSpec:
    """Everything that determines one cell's simulated life (and so its cache key)."""

    cell_id: str
    unit_id: str
    fleet: str
    chemistry: str
    parameter_set: str
    sei_parameters_from: str | None
    sei_rate_constant: float
    sei_activation_energy: float
    capacity_factor: float
    temperature_c: float
    fast_charge_share: float
    depth_of_discharge: float
    v_min: float
    v_max: float
    reference_every: int
    reference_tests: int

    def key(self) -> str:
        blob = json.dumps([AGING_VERSION, _pybamm_version(), {k: v for k, v in asdict(self).items()
                                                              if k not in ("cell_id", "unit_id", "fleet")}], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class ReferenceTest:
    """One reference test as the cell lived it (clean: sensor noise is the log writer's business)."""

    index: int
    usage_cycles: int  # usage cycles before this test
    time_s: np.ndarray
    current_a: np.ndarray  # positive = discharge
    voltage_v: np.ndarray
    temperature_c: np.ndarray
    step: np.ndarray  # index into STEPS
    capacity_ah: float  # charge of the capacity discharge (truth, for tests)


def _pybamm_version() -> str:
    from importlib.metadata import version

    return version("pybamm")


def cell_specs(config: BatteryConfig, fleet: FleetUsage, units: list[str], cells_per_unit: int, reference_every: int,
               reference_tests: int, seed: int) -> list[CellSpec]:
    """The fleet's cells with their manufacturing spread and field temperature (seeded per cell)."""
    chem: Chemistry = config.chemistries[fleet.chemistry]
    out = []
    for unit in units:
        for c in range(cells_per_unit):
            cell_id = f"{unit}-c{c}"
            rng = np.random.default_rng([seed, *(ord(ch) for ch in cell_id)])
            out.append(CellSpec(
                cell_id=cell_id, unit_id=unit, fleet=fleet.id, chemistry=chem.name, parameter_set=chem.parameter_set,
                sei_parameters_from=chem.sei_parameters_from,
                sei_rate_constant=float(chem.sei_rate_constant * math.exp(rng.normal(0, config.sei_rate_spread_log))),
                sei_activation_energy=config.sei_activation_energy,
                capacity_factor=float(1 + rng.normal(0, config.capacity_spread)),
                temperature_c=round(float(fleet.ambient_c + rng.normal(0, fleet.temperature_spread_c)), 2),
                fast_charge_share=fleet.fast_charge_share, depth_of_discharge=fleet.depth_of_discharge,
                v_min=chem.v_min, v_max=chem.v_max, reference_every=reference_every, reference_tests=reference_tests))
    return out


def _experiment(spec: CellSpec):
    import pybamm

    v0, v1 = spec.v_min, spec.v_max
    minutes = 60.0 * spec.depth_of_discharge
    usage = {rate: (f"Discharge at 1C for {minutes:.1f} minutes or until {v0}V", f"Charge at {rate}C until {v1}V",
                    f"Hold at {v1}V until C/20") for rate in ("0.5", "2")}
    reference = ("Rest for 30 minutes (60 second period)", "Discharge at 1C for 10 seconds (1 second period)",
                 "Rest for 10 minutes (10 second period)", f"Discharge at C/10 until {v0}V (60 second period)",
                 "Rest for 30 minutes (60 second period)", f"Charge at C/10 until {v1}V (60 second period)",
                 f"Hold at {v1}V until C/50 (60 second period)")
    cycles: list = []
    saved = []
    fast_every = round(1 / spec.fast_charge_share) if spec.fast_charge_share > 0 else 0
    for t in range(spec.reference_tests):
        cycles.append(reference)
        saved.append(len(cycles))  # 1-indexed
        if t == spec.reference_tests - 1:
            break
        for k in range(spec.reference_every):
            fast = fast_every and (t * spec.reference_every + k) % fast_every == 0
            cycles.append(usage["2" if fast else "0.5"])
    return pybamm.Experiment(cycles), saved


def _parameters(spec: CellSpec):
    import pybamm

    p = pybamm.ParameterValues(spec.parameter_set)
    if spec.sei_parameters_from:
        donor = pybamm.ParameterValues(spec.sei_parameters_from)
        p.update({k: donor[k] for k in donor.keys() if "SEI" in k or k.startswith("EC ")}, check_already_exists=False)
    kelvin = 273.15 + spec.temperature_c
    p.update({
        "SEI kinetic rate constant [m.s-1]": spec.sei_rate_constant,
        "SEI growth activation energy [J.mol-1]": spec.sei_activation_energy,
        "Ambient temperature [K]": kelvin, "Initial temperature [K]": kelvin,
        "Electrode height [m]": p["Electrode height [m]"] * spec.capacity_factor,
        "Nominal cell capacity [A.h]": p["Nominal cell capacity [A.h]"] * spec.capacity_factor,
    }, check_already_exists=False)
    return p


def simulate_cell(spec: CellSpec) -> list[ReferenceTest]:
    """Run PyBaMM for one cell's life; the reference tests it went through."""
    import pybamm

    experiment, saved = _experiment(spec)
    model = pybamm.lithium_ion.SPM({"SEI": "ec reaction limited"})
    sim = pybamm.Simulation(model, parameter_values=_parameters(spec), experiment=experiment, solver=pybamm.IDAKLUSolver())
    sol = sim.solve(initial_soc=1.0, save_at_cycles=saved)
    tests = []
    for i, cycle_no in enumerate(saved):
        cycle = sol.cycles[cycle_no - 1]
        if cycle is None or len(cycle.steps) < len(STEPS):
            break  # the cell could no longer complete a reference test (end of life in the simulation)
        parts = {k: [] for k in ("t", "i", "v", "s")}
        t0 = float(cycle.steps[0]["Time [s]"].entries[0])
        for si, step in enumerate(cycle.steps[: len(STEPS)]):
            t = step["Time [s]"].entries - t0
            parts["t"].append(t)
            parts["i"].append(step["Current [A]"].entries)
            parts["v"].append(step["Voltage [V]"].entries)
            parts["s"].append(np.full(len(t), si, dtype=np.int8))
        dis = cycle.steps[STEPS.index("capacity_discharge")]["Discharge capacity [A.h]"].entries
        t = np.concatenate(parts["t"])
        tests.append(ReferenceTest(i, i * spec.reference_every, t, np.concatenate(parts["i"]), np.concatenate(parts["v"]),
                                   np.full(len(t), spec.temperature_c), np.concatenate(parts["s"]), float(dis[-1] - dis[0])))
    return tests


def _pack(tests: list[ReferenceTest]) -> bytes:
    buf = io.BytesIO()
    arrays = {}
    for t in tests:
        for name in ("time_s", "current_a", "voltage_v", "temperature_c", "step"):
            arrays[f"{t.index}/{name}"] = getattr(t, name)
        arrays[f"{t.index}/meta"] = np.array([t.usage_cycles, t.capacity_ah])
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _unpack(data: bytes) -> list[ReferenceTest]:
    z = np.load(io.BytesIO(data))
    idx = sorted({int(k.split("/")[0]) for k in z.files})
    out = []
    for i in idx:
        meta = z[f"{i}/meta"]
        out.append(ReferenceTest(i, int(meta[0]), z[f"{i}/time_s"], z[f"{i}/current_a"], z[f"{i}/voltage_v"],
                                 z[f"{i}/temperature_c"], z[f"{i}/step"], float(meta[1])))
    return out


def cached_cell(spec: CellSpec, cache_dir: Path) -> tuple[list[ReferenceTest], bool]:
    """The cell's reference tests, from the cache when this exact run was done before (and whether it was)."""
    path = cache_dir / spec.key()[:2] / f"{spec.key()}.npz"
    if path.exists():
        try:
            return _unpack(path.read_bytes()), True
        except Exception:  # a damaged cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
    tests = simulate_cell(spec)
    atomic_write_bytes(path, _pack(tests))
    return tests, False
