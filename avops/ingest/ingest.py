"""Ingest a cohort's landed drive logs into validated, content-addressed tables.

Per file: read (MCAP, BLF, ASC, MF4), decode CAN with the cohort's DBC (vectorized),
store camera frames and point clouds in the object store, build Parquet tables and
validate them with pandera. A file that fails any step is quarantined with a reason
and every other file of the partition is still ingested.

Per-file results are cached by (file sha256, DBC sha256, ingest version), so adding
one new drive to a cohort of thousands re-reads only that drive.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pandera.errors
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from avops import datasets
from avops.can.dbc import dbc_sha256, load_dbc
from avops.can.decode import VectorizedDecoder
from avops.can.frames import CanFrames
from avops.can.logs import CanLogError, read_can_log
from avops.home import HomeLayout
from avops.ingest import schemas
from avops.ingest.mcap_drive import McapDrive, read_mcap_drive
from avops.ingest.quarantine import IngestError, Quarantined, quarantine
from avops.fleet_registry import Cohort
from avops.store import ObjectStore, atomic_write_json, open_store, parquet_bytes, sha256_file

INGEST_VERSION = "1"
ASSET_KEY = "ingest/raw_drives"
FORMATS = {".mcap": "mcap", ".blf": "blf", ".asc": "asc", ".mf4": "mf4"}
IGNORED_SUFFIXES = (".partial", ".tmp", ".reason.json")


def landed_files(landing_cohort_dir: Path) -> list[Path]:
    """Files a logger finished delivering (dotfiles and ``.partial`` uploads are still in flight)."""
    if not landing_cohort_dir.exists():
        return []
    return sorted(
        p
        for p in landing_cohort_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(IGNORED_SUFFIXES)
    )


@dataclass
class FileResult:
    tables: dict[str, pa.Table]
    drive: dict


@dataclass
class PartitionResult:
    manifest: datasets.Manifest
    inputs: list[dict]
    quarantined: list[Quarantined]
    reused: int
    ingested: int
    table_rows: dict[str, int] = field(default_factory=dict)


def _vehicle_from_path(rel: Path) -> str:
    return rel.parts[1] if len(rel.parts) >= 3 else "unknown"


def _odd_asof(context: list[dict], ts_ns: np.ndarray) -> dict[str, list]:
    """Attach the vehicle context valid at each timestamp (last report at or before it)."""
    keys = ("illumination", "weather", "road_type", "roadworks")
    if not context:
        return {k: (["unknown"] * len(ts_ns) if k != "roadworks" else [False] * len(ts_ns)) for k in keys}
    ctx_ts = np.array([c["timestamp_ns"] for c in context])
    idx = np.clip(np.searchsorted(ctx_ts, ts_ns, side="right") - 1, 0, len(context) - 1)
    return {k: [context[i][k] for i in idx] for k in keys}


def _keyed(n: int, drive_id: str, vehicle_id: str) -> dict[str, pa.Array]:
    return {"drive_id": pa.array([drive_id] * n, pa.string()), "vehicle_id": pa.array([vehicle_id] * n, pa.string())}


def _decode_can(path: Path, frames: CanFrames, decoder: VectorizedDecoder, drive_id: str, vehicle_id: str) -> dict[str, pa.Table]:
    result = decoder.decode(frames)
    if result.unknown_ids:
        ids = ", ".join(f"0x{k:X} ({v} frames)" for k, v in sorted(result.unknown_ids.items())[:10])
        raise IngestError(path, "unknown_can_ids", f"{sum(result.unknown_ids.values())} frames with ids the DBC does not define: {ids}",
                          {"unknown_ids": {f"0x{k:X}": v for k, v in result.unknown_ids.items()}})
    if result.frames_short:
        raise IngestError(path, "corrupt", f"frames shorter than their DBC length: {result.frames_short}")
    tables = {}
    for name, table in result.tables.items():
        if table.num_rows == 0:
            continue
        cols = _keyed(table.num_rows, drive_id, vehicle_id)
        for c in table.column_names:
            cols[c] = table[c]
        tables[schemas.can_table_name(name)] = pa.table(cols)
    return tables


def ingest_file(path: Path, rel: Path, cohort: Cohort, store: ObjectStore, decoder: VectorizedDecoder, dbc_digest: str) -> FileResult:
    """Ingest one landed file or raise IngestError; writes only content-addressed objects."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(path, "unsupported_format", f"extension {path.suffix!r} is not one of {', '.join(FORMATS)}")
    if path.stat().st_size == 0:
        raise IngestError(path, "empty")
    vehicle_id = _vehicle_from_path(rel)
    drive_id = path.stem
    tables: dict[str, pa.Table] = {}
    camera_n = lidar_n = radar_n = 0
    if fmt == "mcap":
        drive: McapDrive = read_mcap_drive(path)
        md = drive.metadata
        if md.get("cohort") != cohort.id or (vehicle_id != "unknown" and md.get("vehicle_id") != vehicle_id):
            raise IngestError(path, "cohort_mismatch", f"log says cohort={md.get('cohort')} vehicle={md.get('vehicle_id')}, landing path says {cohort.id}/{vehicle_id}")
        drive_id = md.get("drive_id", drive_id)
        frames = drive.can
        ctx_ts = np.array([c["timestamp_ns"] for c in drive.context], dtype=np.int64)
        if drive.context:
            odd = _odd_asof(drive.context, ctx_ts)
            tables["odd_context"] = pa.table({**_keyed(len(ctx_ts), drive_id, vehicle_id), "timestamp": pa.array(ctx_ts / 1e9), **odd})
        if drive.camera:
            ts = np.array([c[0] for c in drive.camera], dtype=np.int64)
            digests, widths, heights = [], [], []
            for _, enc, data in drive.camera:
                try:
                    w, h = Image.open(io.BytesIO(data)).size
                except Exception as exc:
                    raise IngestError(path, "corrupt", f"camera frame is not a readable {enc} image: {exc}") from exc
                widths.append(w)
                heights.append(h)
                digests.append(store.put_bytes(data))
            camera_n = len(ts)
            tables["camera_frames"] = pa.table(
                {
                    **_keyed(camera_n, drive_id, vehicle_id),
                    "timestamp": pa.array(ts / 1e9),
                    "frame_index": pa.array(np.arange(camera_n, dtype=np.int64)),
                    "encoding": pa.array([c[1] for c in drive.camera]),
                    "object_sha256": pa.array(digests),
                    "width": pa.array(widths, pa.int64()),
                    "height": pa.array(heights, pa.int64()),
                    **_odd_asof(drive.context, ts),
                }
            )
        if drive.lidar:
            digests, counts = [], []
            for _, pts in drive.lidar:
                buf = io.BytesIO()
                np.save(buf, pts.astype(np.float32), allow_pickle=False)
                digests.append(store.put_bytes(buf.getvalue()))
                counts.append(len(pts))
            lidar_n = len(digests)
            tables["lidar_sweeps"] = pa.table(
                {
                    **_keyed(lidar_n, drive_id, vehicle_id),
                    "timestamp": pa.array(np.array([x[0] for x in drive.lidar]) / 1e9),
                    "object_sha256": pa.array(digests),
                    "n_points": pa.array(counts, pa.int64()),
                }
            )
        if drive.radar:
            radar_n = len(drive.radar)
            df = pd.DataFrame(drive.radar)
            tables["radar_detections"] = pa.table(
                {
                    **_keyed(radar_n, drive_id, vehicle_id),
                    "timestamp": pa.array(df["timestamp_ns"].to_numpy() / 1e9),
                    **{c: pa.array(df[c].astype(float).to_numpy()) if c in df else pa.nulls(radar_n, pa.float64())
                       for c in ("range_m", "azimuth_deg", "range_rate_mps", "rcs_dbsm", "snr_db")},
                }
            )
    else:
        try:
            frames = read_can_log(path)
        except CanLogError as exc:
            reason = {"empty": "empty", "truncated": "truncated", "unsupported_format": "unsupported_format",
                      "not_a_can_log": "not_the_declared_format"}.get(exc.reason, "corrupt")
            raise IngestError(path, reason, str(exc)) from exc
    tables.update(_decode_can(path, frames, decoder, drive_id, vehicle_id))
    times = [float(frames.timestamp.min()), float(frames.timestamp.max())] if len(frames) else []
    for t in tables.values():
        if t.num_rows and "timestamp" in t.column_names:
            col = t["timestamp"].to_numpy()
            times += [float(col.min()), float(col.max())]
    if not times:
        raise IngestError(path, "empty", "the log contains no frames or sensor messages")
    drive_row = {
        "drive_id": drive_id,
        "vehicle_id": vehicle_id,
        "cohort": cohort.id,
        "source_file": str(rel),
        "source_sha256": "",  # filled by the caller, which hashed the file already
        "source_bytes": path.stat().st_size,
        "format": fmt,
        "start_time": min(times),
        "end_time": max(times),
        "n_can_frames": len(frames),
        "n_camera_frames": camera_n,
        "n_lidar_sweeps": lidar_n,
        "n_radar_detections": radar_n,
        "dbc_sha256": dbc_digest,
    }
    return FileResult(tables=tables, drive=drive_row)


def validate_tables(path: Path, tables: dict[str, pa.Table], db) -> None:
    for name, table in tables.items():
        try:
            schemas.schema_for(name, db).validate(table.to_pandas(), lazy=True)
        except pandera.errors.SchemaErrors as exc:
            summary = exc.failure_cases[["column", "check"]].drop_duplicates().head(5).to_dict("records")
            raise IngestError(path, "schema_validation", f"table {name}: {summary}") from exc


class DigestCache:
    """sha256 of landed files keyed by (size, mtime_ns, inode), so a tick over thousands of
    unchanged multi-GB logs does not re-read them. Any change to a file changes its stat key."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] = json.loads(path.read_text()) if path.exists() else {}
        self.dirty = False

    def digest(self, file: Path, rel: str) -> str:
        st = file.stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self.entries.get(rel)
        if hit and hit[:3] == key:
            return hit[3]
        digest = sha256_file(file)
        self.entries[rel] = [*key, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            atomic_write_json(self.path, self.entries)


def ingest_partition(
    home: HomeLayout,
    cohort: Cohort,
    progress: Callable[[str, Path], None] | None = None,
) -> PartitionResult:
    """Ingest every landed file of one cohort and publish the partition's tables."""
    store = open_store(home)
    db = load_dbc(cohort.dbc_spec)
    dbc_digest = dbc_sha256(cohort.dbc_spec)
    decoder = VectorizedDecoder(db)
    landing_root = home.landing
    per_table: dict[str, list[pa.Table]] = {}
    table_sources: dict[str, list[str]] = {}
    inputs: list[dict] = []
    quarantined: list[Quarantined] = []
    reused = ingested = 0
    drive_rows = []
    digests = DigestCache(home.cache / "ingest" / "file_digests" / f"{cohort.id}.json")
    for path in landed_files(landing_root / cohort.id):
        rel = path.relative_to(landing_root)
        digest = digests.digest(path, str(rel))
        cache_file = home.cache / "ingest" / f"v{INGEST_VERSION}-{dbc_digest[:16]}" / f"{digest}.json"
        cached = None
        if cache_file.exists():
            cached = json.loads(cache_file.read_text())
            if not all(store.has(d) for d in cached["tables"].values()):
                cached = None
        if cached and cached["drive"]["source_file"] == str(rel):
            tables = {n: pq.read_table(store.path(d)) for n, d in cached["tables"].items()}
            drive = cached["drive"]
            reused += 1
            status = "reused"
        else:
            try:
                result = ingest_file(path, rel, cohort, store, decoder, dbc_digest)
                validate_tables(path, result.tables, db)
            except IngestError as exc:
                q = quarantine(path, landing_root, home.quarantine, exc)
                quarantined.append(q)
                if progress:
                    progress(f"quarantined ({exc.reason})", path)
                continue
            tables = result.tables
            drive = {**result.drive, "source_sha256": digest}
            atomic_write_json(cache_file, {"drive": drive, "tables": {n: store.put_bytes(parquet_bytes(t)) for n, t in tables.items()}})
            ingested += 1
            status = "ingested"
        drive_rows.append(drive)
        inputs.append({"file": str(rel), "sha256": digest, "format": drive["format"], "drive_id": drive["drive_id"]})
        for name, table in tables.items():
            per_table.setdefault(name, []).append(table)
            table_sources.setdefault(name, []).append(digest)
        if progress:
            progress(status, path)

    digests.save()
    out: dict[str, pa.Table] = {}
    if drive_rows:
        # fixed column order and row order: the manifest must be a pure function of the inputs
        rows = sorted(drive_rows, key=lambda r: r["drive_id"])
        out["drives"] = pa.Table.from_pylist(rows).select(list(schemas.DRIVES.columns))
    for name, parts in per_table.items():
        table = pa.concat_tables(parts, promote_options="permissive")
        out[name] = table.sort_by([("drive_id", "ascending"), ("timestamp", "ascending")])
    table_sources["drives"] = [i["sha256"] for i in inputs]
    manifest = datasets.publish(
        store,
        home.refs,
        ASSET_KEY,
        cohort.id,
        out,
        {
            "ingest_version": INGEST_VERSION,
            "dbc": cohort.dbc,
            "dbc_sha256": dbc_digest,
            "inputs": inputs,
            "table_sources": table_sources,
            "quarantined": [q.__dict__ for q in quarantined],
        },
    )
    return PartitionResult(manifest, inputs, quarantined, reused, ingested, {n: t.num_rows for n, t in out.items()})
