"""The BMS reference-test log: what a battery management system uploads after a reference test.

One Parquet file per test (a rest, a 1C current pulse, a C/10 capacity discharge, a C/10 charge),
with the samples as the BMS measured them (voltage to 0.1 mV, current to 1 mA, temperature to
0.1 °C) and the test's identity in the file's key-value metadata (``avops.bms.*``). Vehicles
deliver it after a workshop capacity check or a scheduled slow charge; storage units after their
periodic maintenance test. Reading never trusts the file: every problem is a ``BmsLogError``
naming the file and what is wrong, so ingest can quarantine it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = "avops.bms.reference_test/1"
STEP_NAMES = ("rest", "pulse", "relax", "capacity_discharge", "rest_empty", "slow_charge", "cv_hold")
SCHEMA = pa.schema([("time_s", pa.float64()), ("current_a", pa.float32()), ("voltage_v", pa.float32()),
                    ("temperature_c", pa.float32()), ("step", pa.dictionary(pa.int8(), pa.string()))])
META_KEYS = ("fleet", "unit_id", "cell_id", "chemistry", "started_at", "usage_cycles")
# plausibility: anything outside is a sensor or export fault, not a battery state
VOLTAGE_RANGE = (1.5, 5.0)
CURRENT_ABS_MAX = 500.0
TEMPERATURE_RANGE = (-45.0, 90.0)


class BmsLogError(ValueError):
    """A BMS log cannot be used; ``reason`` is a quarantine reason code."""

    def __init__(self, path: Path | str, reason: str, detail: str):
        self.path, self.reason, self.detail = Path(path), reason, detail
        super().__init__(f"{path}: {detail}")


@dataclass
class BmsTest:
    fleet: str
    unit_id: str
    cell_id: str
    chemistry: str
    started_at: datetime
    usage_cycles: int
    time_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    temperature_c: np.ndarray
    step: np.ndarray  # step names

    @property
    def test_id(self) -> str:
        return f"{self.cell_id}@{self.started_at:%Y%m%dT%H%M%S}"


def file_name(cell_id: str, started_at: datetime) -> str:
    return f"{cell_id}-{started_at:%Y%m%dT%H%M%S}.parquet"


def encode(test: BmsTest) -> bytes:
    if set(np.unique(test.step)) - set(STEP_NAMES):
        raise ValueError(f"unknown step names {set(np.unique(test.step)) - set(STEP_NAMES)}")
    table = pa.table({"time_s": pa.array(test.time_s, pa.float64()), "current_a": pa.array(test.current_a, pa.float32()),
                      "voltage_v": pa.array(test.voltage_v, pa.float32()), "temperature_c": pa.array(test.temperature_c, pa.float32()),
                      "step": pa.array(test.step.astype(str)).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.string()))},
                     schema=SCHEMA)
    meta = {"avops.bms.format": FORMAT, **{f"avops.bms.{k}": str(getattr(test, k) if k != "started_at" else test.started_at.isoformat())
                                           for k in META_KEYS}}
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    return buf.getvalue()


def decode(path: Path, data: bytes | None = None) -> BmsTest:
    """Read and validate one log; ``BmsLogError`` names what is wrong."""
    raw = data if data is not None else Path(path).read_bytes()
    if not raw:
        raise BmsLogError(path, "empty", "the file is empty")
    try:
        table = pq.read_table(io.BytesIO(raw))
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise BmsLogError(path, "corrupt", f"not a readable Parquet file ({type(e).__name__}: {e})") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("avops.bms.format") != FORMAT:
        raise BmsLogError(path, "missing_metadata", f"not a BMS reference-test log: format is {meta.get('avops.bms.format')!r}, expected {FORMAT!r}")
    missing = [k for k in META_KEYS if f"avops.bms.{k}" not in meta]
    if missing:
        raise BmsLogError(path, "missing_metadata", f"metadata lacks {', '.join('avops.bms.' + k for k in missing)}")
    absent = [f.name for f in SCHEMA if f.name not in table.column_names]
    if absent:
        raise BmsLogError(path, "schema_validation", f"missing columns {absent}")
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in ("time_s", "current_a", "voltage_v", "temperature_c")}
    step = np.asarray(table.column("step").cast(pa.string()).to_pylist(), dtype=object)
    problems = []
    for c, v in cols.items():
        if not np.all(np.isfinite(v.astype(np.float64))):
            problems.append(f"{c} has {int((~np.isfinite(v.astype(np.float64))).sum())} non-finite values")
    if len(cols["time_s"]) < 10:
        problems.append(f"only {len(cols['time_s'])} samples")
    elif np.any(np.diff(cols["time_s"]) < 0):
        problems.append(f"time_s goes backwards at sample {int(np.argmax(np.diff(cols['time_s']) < 0)) + 1}")
    for c, (lo, hi) in (("voltage_v", VOLTAGE_RANGE), ("temperature_c", TEMPERATURE_RANGE), ("current_a", (-CURRENT_ABS_MAX, CURRENT_ABS_MAX))):
        v = cols[c]
        bad = (v < lo) | (v > hi)
        if bad.any():
            problems.append(f"{c} outside [{lo}, {hi}] at {int(bad.sum())} samples (first: {float(v[bad][0]):.3f})")
    unknown = set(step) - set(STEP_NAMES)
    if unknown:
        problems.append(f"unknown step names {sorted(map(str, unknown))}")
    for needed in ("pulse", "capacity_discharge", "slow_charge"):
        if needed not in set(step):
            problems.append(f"no {needed!r} step: the test is incomplete")
    if problems:
        raise BmsLogError(path, "schema_validation", "; ".join(problems))
    try:
        started = datetime.fromisoformat(meta["avops.bms.started_at"])
        cycles = int(meta["avops.bms.usage_cycles"])
    except ValueError as e:
        raise BmsLogError(path, "missing_metadata", f"unreadable metadata: {e}") from None
    if started.tzinfo is None:
        raise BmsLogError(path, "missing_metadata", "avops.bms.started_at has no time zone")
    return BmsTest(meta["avops.bms.fleet"], meta["avops.bms.unit_id"], meta["avops.bms.cell_id"], meta["avops.bms.chemistry"],
                   started, cycles, cols["time_s"].astype(np.float64), cols["current_a"], cols["voltage_v"], cols["temperature_c"], step)
