"""Offline (batch) feature computation: DuckDB over the ingested Parquet tables, point in time correct.

Every output row is one (vehicle, as_of) of a spine, and each feature aggregates only that
vehicle's rows with ``as_of - window < timestamp <= as_of``: the range join is the definition,
so a value recorded after the label time cannot reach a training row.
"""

from __future__ import annotations

from itertools import groupby

import duckdb
import pyarrow as pa

from avops.features.expr import NAN
from avops.features.signals import ResolvedFeature
from avops.ingest.schemas import can_table_name

_AGG_SQL = {
    "mean": "avg({v})",
    "frac": "avg({v})",
    "std": "stddev_samp({v})",
    "min": "min({v})",
    "max": "max({v})",
    "p95": "quantile_cont({v}, 0.95)",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _aggregate(f: ResolvedFeature, i: int) -> str:
    ok = f"isfinite(v{i}) AND w{i} = 1"
    if f.agg == "count":
        return f"CAST(count(v{i}) FILTER (WHERE {ok}) AS DOUBLE)"
    return f"coalesce({_AGG_SQL[f.agg].format(v=f'v{i}')} FILTER (WHERE {ok}), {NAN})"


def feature_sql(message: str, window_s: float, features: list[ResolvedFeature]) -> str:
    """One query for the features that read one message over one window."""
    cols = []
    for i, f in enumerate(features):
        cols.append(f"{f.value.sql()} AS v{i}")
        cols.append(f"{f.where.sql() if f.where is not None else '1.0'} AS w{i}")
    aggs = ",\n       ".join(f"{_aggregate(f, i)} AS {_quote(f.name)}" for i, f in enumerate(features))
    return (
        f"WITH src AS (SELECT vehicle_id, timestamp AS ts, {', '.join(cols)} FROM {_quote(can_table_name(message))})\n"
        f"SELECT s.vehicle_id, s.as_of,\n       {aggs}\n"
        f"FROM spine s LEFT JOIN src ON src.vehicle_id = s.vehicle_id\n"
        f"  AND src.ts > s.as_of - CAST({window_s!r} AS DOUBLE) AND src.ts <= s.as_of\n"
        f"GROUP BY s.vehicle_id, s.as_of"
    )


def compute_offline(con: duckdb.DuckDBPyConnection, features: list[ResolvedFeature], spine: pa.Table) -> pa.Table:
    """Features for every row of ``spine`` (columns ``vehicle_id``, ``as_of`` and any others, kept).

    ``con`` has one view per ingested table (``can__<message>``), as :func:`avops.query.connect` makes.
    """
    if "vehicle_id" not in spine.column_names or "as_of" not in spine.column_names:
        raise ValueError(f"a feature spine needs vehicle_id and as_of columns, got {spine.column_names}")
    con.register("spine", spine.select(["vehicle_id", "as_of"]))
    try:
        out = spine
        key = lambda f: (f.message, f.window_s)  # noqa: E731
        results = {}
        for (message, window), group in groupby(sorted(features, key=key), key=key):
            group = list(group)
            table = con.sql(feature_sql(message, window, group)).to_arrow_table()
            results.update(_align(spine, table, [f.name for f in group]))
        for f in features:  # catalog order, whatever the grouping
            out = out.append_column(f.name, results[f.name])
        return out
    finally:
        con.unregister("spine")


def _align(spine: pa.Table, table: pa.Table, names: list[str]) -> dict[str, pa.Array]:
    index = {(v, a): i for i, (v, a) in enumerate(zip(table["vehicle_id"].to_pylist(), table["as_of"].to_pylist()))}
    order = pa.array([index[(v, a)] for v, a in zip(spine["vehicle_id"].to_pylist(), spine["as_of"].to_pylist())], pa.int64())
    return {n: table[n].take(order) for n in names}
