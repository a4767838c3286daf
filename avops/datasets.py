"""Published table sets: content-addressed Parquet tables named by a manifest.

An asset partition's output is a manifest (JSON in the object store) that lists its
tables by sha256; a small ref file points at the current manifest and is replaced
atomically. Readers resolve the ref once and then only read immutable objects, so a
concurrent rebuild can never show them a half-written table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from avops.store import ObjectStore, parquet_bytes


@dataclass(frozen=True)
class Manifest:
    digest: str
    body: dict

    @property
    def tables(self) -> dict[str, dict]:
        return self.body["tables"]


def publish(store: ObjectStore, refs_root: Path, key: str, partition: str, tables: dict[str, pa.Table], extra: dict) -> Manifest:
    """Store each table, then the manifest, then move the ref (the only mutable write).

    The manifest holds no time: the same tables and metadata give the same digest, so a rebuild
    that changed nothing is recognisably the same version. When it was published is on the ref.
    """
    entries = {}
    for name, table in sorted(tables.items()):
        digest = store.put_bytes(parquet_bytes(table))
        entries[name] = {"sha256": digest, "rows": table.num_rows, "columns": table.column_names}
    body = {"asset": key, "partition": partition, "tables": entries, **extra}
    digest = store.put_json(body)
    store.write_ref(refs_root, key, partition, {"manifest": digest, "published_at": time.time()})
    return Manifest(digest, body)


def current(store: ObjectStore, refs_root: Path, key: str, partition: str) -> Manifest | None:
    ref = store.read_ref(refs_root, key, partition)
    if ref is None:
        return None
    digest = ref["manifest"]
    return Manifest(digest, store.get_json(digest))  # type: ignore[arg-type]


def read_table(store: ObjectStore, manifest: Manifest, name: str) -> pa.Table:
    entry = manifest.tables.get(name)
    if entry is None:
        raise KeyError(f"{manifest.body['asset']}[{manifest.body['partition']}] has no table {name!r}; it has {sorted(manifest.tables)}")
    return pq.read_table(store.path(entry["sha256"]))
