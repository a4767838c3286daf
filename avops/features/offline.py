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


def rows_sql(message: str, joins: dict[str, list[str]], tolerance_s: float) -> str:
    """The feature's rows: the message's samples, each joined as of it with the other messages' latest sample."""
    if not joins:
        return _quote(can_table_name(message))
    selects, froms = ["p.*"], [f"{_quote(can_table_name(message))} p"]
    for k, (joined, signals) in enumerate(sorted(joins.items())):
        cols = ", ".join(f"{_quote(s)} AS {_quote(f'{joined}.{s}')}" for s in signals)
        froms.append(f"ASOF LEFT JOIN (SELECT vehicle_id, timestamp AS _t, {cols} FROM {_quote(can_table_name(joined))}) j{k}"
                     f" ON p.vehicle_id = j{k}.vehicle_id AND p.timestamp >= j{k}._t")
        selects += [f"CASE WHEN p.timestamp - j{k}._t <= CAST({tolerance_s!r} AS DOUBLE) THEN j{k}.{_quote(f'{joined}.{s}')} END"
                    f" AS {_quote(f'{joined}.{s}')}" for s in signals]
    return f"(SELECT {', '.join(selects)} FROM {' '.join(froms)})"


def group_key(f: ResolvedFeature) -> tuple:
    """Features computed by one query: same rows (message and joins) and same window."""
    return (f.message, f.window_s, tuple((m, tuple(s)) for m, s in sorted(f.joins().items())), f.asof_tolerance_s if f.joins() else 0.0)


def feature_sql(message: str, window_s: float, features: list[ResolvedFeature]) -> str:
    """One query for the features that read the same rows over one window."""
    cols = []
    for i, f in enumerate(features):
        cols.append(f"{f.value.sql()} AS v{i}")
        cols.append(f"{f.where.sql() if f.where is not None else '1.0'} AS w{i}")
    aggs = ",\n       ".join(f"{_aggregate(f, i)} AS {_quote(f.name)}" for i, f in enumerate(features))
    rows = rows_sql(message, features[0].joins(), features[0].asof_tolerance_s)
    return (
        f"WITH src AS (SELECT vehicle_id, timestamp AS ts, {', '.join(cols)} FROM {rows})\n"
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
        results = {}
        present = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        for (message, window, *_), group in groupby(sorted(features, key=group_key), key=group_key):
            group = list(group)
            needed = {can_table_name(m) for m in [message, *group[0].joins()]}
            if not needed <= present:  # this data never carried the message: no samples, as online
                results.update({f.name: pa.array([0.0 if f.agg == "count" else float("nan")] * spine.num_rows, pa.float64())
                                for f in group})
                continue
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
