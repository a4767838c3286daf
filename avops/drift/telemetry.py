"""Row-level telemetry for drift tests: every sample of each drift signal in a time range."""

from __future__ import annotations

import duckdb
import numpy as np

from avops.features.definitions import DriftSignal
from avops.features.offline import rows_sql
from avops.features.signals import Platform, resolve_features
from avops.ingest.schemas import can_table_name


def telemetry_rows(con: duckdb.DuckDBPyConnection, platform: Platform, signals: list[DriftSignal],
                   after: float | None = None, until: float | None = None) -> dict[str, np.ndarray]:
    """``{signal: values}`` for samples with ``after < timestamp <= until`` (either bound optional).

    ``con`` has the ingested ``can__<message>`` views. A signal the platform cannot compute, or
    whose messages were never received, is left out; rows where its filter fails or its value
    is not finite are dropped.
    """
    tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    resolved, _ = resolve_features(platform, signals)
    lo = float("-inf") if after is None else float(after)
    hi = float("inf") if until is None else float(until)
    out: dict[str, np.ndarray] = {}
    for f in resolved:
        if not {can_table_name(m) for m in [f.message, *f.joins()]} <= tables:
            continue
        where = f.where.sql() if f.where is not None else "1.0"
        sql = (f"SELECT v FROM (SELECT timestamp, {f.value.sql()} AS v, {where} AS w FROM {rows_sql(f.message, f.joins(), f.asof_tolerance_s)}) "
               f"WHERE timestamp > ? AND timestamp <= ? AND isfinite(v) AND w = 1")
        out[f.name] = np.asarray(con.sql(sql, params=[lo, hi]).fetchnumpy()["v"], dtype=np.float64)
    return out
