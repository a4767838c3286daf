"""``avops can decode`` as a plain function (the click command only parses arguments).

Kept free of click so ingest and tests call exactly what the command runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avops.can.dbc import dbc_path, dbc_sha256, load_dbc
from avops.can.decode import VectorizedDecoder
from avops.can.logs import read_can_log

# progress(path, done, total): called after each log has been read and decoded.
Progress = Callable[[Path, int, int], None]


@dataclass
class DecodeSummary:
    """What ``decode_logs`` did, for the command's report and for lineage records."""

    dbc: Path
    dbc_sha256: str
    files_read: list[Path] = field(default_factory=list)
    frames_read: int = 0
    frames_decoded: int = 0
    rows_per_message: dict[str, int] = field(default_factory=dict)  # message name -> rows written
    outputs: dict[str, Path] = field(default_factory=dict)  # message name -> parquet file
    unknown_ids: dict[int, int] = field(default_factory=dict)  # frame_id -> frames no DBC message matched
    frames_short: dict[str, int] = field(default_factory=dict)  # message -> frames shorter than the DBC length


def decode_logs(
    dbc_spec: str | Path,
    logs: Sequence[Path],
    out_dir: Path,
    progress: Progress | None = None,
) -> DecodeSummary:
    """Decode CAN logs with a DBC into ``out_dir/<message>.parquet`` (``timestamp`` + one column per signal).

    All logs are read and decoded before anything is written, so a damaged log
    (``CanLogError``) leaves ``out_dir`` untouched; each file is then written to
    a temporary name and renamed, so readers never see half a parquet file.
    Rows are concatenated across logs and sorted by timestamp.
    """
    db = load_dbc(dbc_spec)
    decoder = VectorizedDecoder(db)
    summary = DecodeSummary(dbc=dbc_path(dbc_spec), dbc_sha256=dbc_sha256(dbc_spec))
    parts: dict[str, list[pa.Table]] = {}
    logs = [Path(p) for p in logs]
    for done, log in enumerate(logs, 1):
        frames = read_can_log(log)
        result = decoder.decode(frames)
        summary.files_read.append(log)
        summary.frames_read += len(frames)
        summary.frames_decoded += result.frames_decoded
        for name, table in result.tables.items():
            parts.setdefault(name, []).append(table)
        for fid, count in result.unknown_ids.items():
            summary.unknown_ids[fid] = summary.unknown_ids.get(fid, 0) + count
        for name, count in result.frames_short.items():
            summary.frames_short[name] = summary.frames_short.get(name, 0) + count
        if progress is not None:
            progress(log, done, len(logs))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(parts):
        table = pa.concat_tables(parts.pop(name))
        ts = table.column("timestamp").to_numpy()
        if ts.size > 1 and not bool(np.all(ts[1:] >= ts[:-1])):
            table = table.take(pa.array(np.argsort(ts, kind="stable")))
        target = out_dir / f"{_safe_name(name)}.parquet"
        _write_atomic(table, target)
        summary.rows_per_message[name] = table.num_rows
        summary.outputs[name] = target
    return summary


def _safe_name(name: str) -> str:
    """DBC message names are C identifiers in practice; guard the filesystem anyway."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name) or "_"


def _write_atomic(table: pa.Table, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".parquet.tmp", dir=target.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
