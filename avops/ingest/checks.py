"""Checks over a published ingest partition, independent of the run that wrote it.

They re-read the stored objects, so they are evidence about what is stored, not about
what the writer believed it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandera.errors

from avops import datasets
from avops.can.dbc import load_dbc
from avops.ingest import schemas
from avops.store import ObjectStore


@dataclass
class CheckOutcome:
    passed: bool
    summary: str
    details: dict = field(default_factory=dict)


def verify_digests(store: ObjectStore, manifest: datasets.Manifest) -> CheckOutcome:
    """Every table object still hashes to the digest the manifest names."""
    bad = {n: t["sha256"] for n, t in manifest.tables.items() if not store.has(t["sha256"]) or not store.verify(t["sha256"])}
    if bad:
        return CheckOutcome(False, f"{len(bad)} table object(s) missing or corrupted", {"tables": bad})
    return CheckOutcome(True, f"{len(manifest.tables)} table objects verified", {})


def validate_schemas(store: ObjectStore, manifest: datasets.Manifest, dbc_spec: str, with_ranges: bool) -> CheckOutcome:
    """Validate every table with its pandera schema; ``with_ranges`` adds DBC min/max checks."""
    db = load_dbc(dbc_spec)
    failures: dict[str, list] = {}
    rows = 0
    for name in manifest.tables:
        if with_ranges and not name.startswith(schemas.CAN_PREFIX):
            continue
        df = datasets.read_table(store, manifest, name).to_pandas()
        rows += len(df)
        try:
            schemas.schema_for(name, db, with_ranges=with_ranges).validate(df, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            fc = exc.failure_cases
            failures[name] = fc.groupby(["column", "check"], dropna=False).size().reset_index(name="n").head(10).to_dict("records")
    if failures:
        return CheckOutcome(False, f"{len(failures)} table(s) violate their schema", {"failures": failures, "rows_checked": rows})
    return CheckOutcome(True, f"{rows} rows in {len(manifest.tables)} tables valid", {"rows_checked": rows})
