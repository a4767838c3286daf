"""Query any published table set with DuckDB: one view per table, read straight from the object store."""

from __future__ import annotations

import duckdb

from avops import datasets
from avops.home import HomeLayout
from avops.store import ObjectStore, open_store


def connect(home: HomeLayout, key: str, partition: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per table of ``key[partition]`` (e.g. ``curation/auto_labels``)."""
    store = open_store(home)
    m = datasets.current(store, home.refs, key, partition)
    if m is None:
        raise LookupError(f"nothing published for {key}[{partition}]; materialize it first")
    return connect_manifest(store, m)


def connect_manifest(store: ObjectStore, m: datasets.Manifest) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per table of one exact manifest (what a recorded digest names)."""
    con = duckdb.connect()
    for name, entry in m.tables.items():
        store.register_table(con, name, entry["sha256"])
    return con
