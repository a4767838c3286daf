"""Offline/online parity on golden windows: the proof that training and the vehicle compute one feature."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from avops.features.online import OnlineFeatures
from avops.features.signals import ResolvedFeature
from avops.ingest.schemas import can_table_name

REL_TOL = 1e-9  # float rounding (summation order, Welford vs two-pass variance), nothing more


@dataclass
class ParityReport:
    windows: list[tuple[str, float]]
    compared: int = 0
    mismatches: list[dict] = field(default_factory=list)
    max_rel_diff: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.compared > 0


def golden_windows(spine: pa.Table, per_vehicle: int = 3) -> list[tuple[str, float]]:
    """Deterministic (vehicle, as_of) pairs: each vehicle's first, middle and last spine rows."""
    by_vehicle: dict[str, list[float]] = {}
    for v, a in zip(spine["vehicle_id"].to_pylist(), spine["as_of"].to_pylist()):
        by_vehicle.setdefault(v, []).append(a)
    out = []
    for v in sorted(by_vehicle):
        times = sorted(by_vehicle[v])
        picks = sorted({times[round(i * (len(times) - 1) / max(1, per_vehicle - 1))] for i in range(per_vehicle)})
        out.extend((v, t) for t in picks)
    return out


def close(a: float, b: float) -> tuple[bool, float]:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b), 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    diff = abs(a - b) / max(1.0, abs(a), abs(b))
    return diff <= REL_TOL, diff


def check_parity(con: duckdb.DuckDBPyConnection, features: list[ResolvedFeature], offline: pa.Table,
                 windows: list[tuple[str, float]], chunk_rows: int = 4096) -> ParityReport:
    """Stream each golden window's raw rows through :class:`OnlineFeatures` and compare with ``offline``.

    The online side reads the vehicle's decoded messages in time order, in chunks, up to
    ``as_of``, as a vehicle would have received them; nothing of the offline result is reused.
    """
    report = ParityReport(windows)
    index = {(v, a): i for i, (v, a) in enumerate(zip(offline["vehicle_id"].to_pylist(), offline["as_of"].to_pylist()))}
    for vehicle, as_of in windows:
        online = OnlineFeatures(features)
        horizon = online.horizon_s
        present = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        for message, signals in sorted(online.inputs.items()):
            if can_table_name(message) not in present:
                continue
            cols = ", ".join(['timestamp'] + [f'"{s}"' for s in signals])
            table = con.sql(
                f'SELECT {cols} FROM "{can_table_name(message)}" WHERE vehicle_id = ? AND timestamp > ? AND timestamp <= ? ORDER BY timestamp',
                params=[vehicle, as_of - horizon, as_of]).to_arrow_table()
            for start in range(0, table.num_rows, chunk_rows):
                part = table.slice(start, chunk_rows)
                online.update(message, part["timestamp"].to_numpy(),
                              {s: part[s].to_numpy(zero_copy_only=False).astype(np.float64) for s in signals})
        got = online.compute(as_of)
        row = index.get((vehicle, as_of))
        if row is None:
            report.mismatches.append({"vehicle_id": vehicle, "as_of": as_of, "feature": "*", "problem": "no offline row"})
            continue
        for f in features:
            want = offline[f.name][row].as_py()
            want = float("nan") if want is None else float(want)
            ok, diff = close(want, got[f.name])
            report.compared += 1
            if not math.isinf(diff):
                report.max_rel_diff = max(report.max_rel_diff, diff)
            if not ok:
                report.mismatches.append({"vehicle_id": vehicle, "as_of": as_of, "feature": f.name, "offline": want, "online": got[f.name]})
    return report
