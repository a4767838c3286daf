"""Quarantine: bad input is set aside with a machine-readable reason, never deleted."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from avops.store import atomic_write_json, sha256_file

# Reasons are stable codes so that dashboards and re-ingest tooling can filter on them.
REASONS = {
    "empty": "the file has no content",
    "truncated": "the file ends before its format says it should (interrupted upload?)",
    "not_the_declared_format": "the content is not the format its extension declares",
    "unsupported_format": "no reader for this file extension",
    "unsupported_schema": "a known topic uses a schema or encoding avops cannot decode",
    "unknown_can_ids": "CAN frames whose ids the cohort's DBC does not define",
    "missing_metadata": "the drive log lacks the avops.drive metadata record",
    "cohort_mismatch": "the log says it belongs to another cohort or vehicle than its landing path",
    "schema_validation": "decoded tables violate their pandera schema",
    "corrupt": "the file could not be decoded",
    "openlabel_invalid": "the review return is not valid OpenLABEL 1.0 JSON",
    "unknown_class": "a label uses a class that is not in the ontology",
    "unknown_sample": "a review refers to a frame that does not exist in the cohort's drives",
}


class IngestError(Exception):
    """A landed file cannot be ingested; ``reason`` is one of ``REASONS``."""

    def __init__(self, path: Path | str, reason: str, detail: str = "", info: dict | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        self.info = info or {}
        super().__init__(f"{self.path}: {reason}: {detail or REASONS[reason]}")


@dataclass(frozen=True)
class Quarantined:
    original: str
    moved_to: str
    sha256: str
    reason: str
    detail: str


def quarantine(path: Path, landing_root: Path, quarantine_root: Path, error: IngestError) -> Quarantined:
    """Move ``path`` under ``quarantine_root`` (same relative path) and write ``<name>.reason.json``."""
    digest = sha256_file(path)
    rel = path.relative_to(landing_root)
    target = quarantine_root / rel
    if target.exists():  # same name quarantined before: keep both
        target = target.with_name(f"{target.name}.{digest[:12]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    reason_file = target.with_name(target.name + ".reason.json")
    record = {
        "file": str(rel),
        "original_path": str(path),
        "quarantined_path": str(target),
        "sha256": digest,
        "size_bytes": path.stat().st_size,
        "reason": error.reason,
        "reason_text": REASONS[error.reason],
        "detail": error.detail,
        **({"info": error.info} if error.info else {}),
        "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "next_step": "fix or re-export the file and copy it into the landing zone again; ingest picks it up",
    }
    atomic_write_json(reason_file, record)  # the reason exists before the file disappears from landing
    os.replace(path, target)
    return Quarantined(str(rel), str(target), digest, error.reason, error.detail)


def quarantine_records(quarantine_root: Path, cohort_id: str) -> list[dict]:
    """Every reason record ever written for a cohort (quarantine is never emptied automatically)."""
    import json

    folder = quarantine_root / cohort_id
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.reason.json"))]
