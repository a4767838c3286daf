"""pandera schemas for every table ingest writes.

Structural rules (types, nulls, time order, digests) reject a file at ingest. Value
ranges from the DBC are reported by the asset checks instead: a real bus carries
out-of-range sentinel values, and those are data to look at, not files to reject.
"""

from __future__ import annotations

import pandera.pandas as pa

SHA256 = pa.Check.str_matches(r"^[0-9a-f]{64}$")
ODD_COLUMNS = {
    "illumination": pa.Column(str, pa.Check.isin(["day", "dusk", "night", "unknown"])),
    "weather": pa.Column(str, pa.Check.isin(["clear", "rain", "fog", "snow", "unknown"])),
    "road_type": pa.Column(str, pa.Check.isin(["motorway", "urban", "rural", "unknown"])),
    "roadworks": pa.Column(bool),
}
KEYS = {"drive_id": pa.Column(str, pa.Check.str_length(min_value=1)), "vehicle_id": pa.Column(str, pa.Check.str_length(min_value=1))}
TIME = {"timestamp": pa.Column(float, pa.Check.gt(0))}

DRIVES = pa.DataFrameSchema(
    {
        **KEYS,
        "cohort": pa.Column(str),
        "source_file": pa.Column(str),
        "source_sha256": pa.Column(str, SHA256),
        "source_bytes": pa.Column(int, pa.Check.gt(0)),
        "format": pa.Column(str, pa.Check.isin(["mcap", "blf", "asc", "mf4"])),
        "start_time": pa.Column(float),
        "end_time": pa.Column(float),
        "n_can_frames": pa.Column(int, pa.Check.ge(0)),
        "n_camera_frames": pa.Column(int, pa.Check.ge(0)),
        "n_lidar_sweeps": pa.Column(int, pa.Check.ge(0)),
        "n_radar_detections": pa.Column(int, pa.Check.ge(0)),
        "dbc_sha256": pa.Column(str, SHA256),
    },
    checks=pa.Check(lambda df: df["end_time"] >= df["start_time"], error="end_time before start_time"),
    unique=["drive_id"],
    name="drives",
)

CAMERA_FRAMES = pa.DataFrameSchema(
    {
        **KEYS,
        **TIME,
        "frame_index": pa.Column(int, pa.Check.ge(0)),
        "encoding": pa.Column(str, pa.Check.isin(["png", "jpeg"])),
        "object_sha256": pa.Column(str, SHA256),
        "width": pa.Column(int, pa.Check.gt(0)),
        "height": pa.Column(int, pa.Check.gt(0)),
        **ODD_COLUMNS,
    },
    unique=["drive_id", "frame_index"],
    name="camera_frames",
)

LIDAR_SWEEPS = pa.DataFrameSchema(
    {**KEYS, **TIME, "object_sha256": pa.Column(str, SHA256), "n_points": pa.Column(int, pa.Check.ge(0))},
    name="lidar_sweeps",
)

RADAR_DETECTIONS = pa.DataFrameSchema(
    {
        **KEYS,
        **TIME,
        "range_m": pa.Column(float, pa.Check.in_range(0, 400)),
        "azimuth_deg": pa.Column(float, pa.Check.in_range(-180, 180)),
        "range_rate_mps": pa.Column(float, pa.Check.in_range(-150, 150)),
        "rcs_dbsm": pa.Column(float, nullable=True),
        "snr_db": pa.Column(float, nullable=True),
    },
    name="radar_detections",
)

ODD_CONTEXT = pa.DataFrameSchema({**KEYS, **TIME, **ODD_COLUMNS}, name="odd_context")

FIXED = {
    "drives": DRIVES,
    "camera_frames": CAMERA_FRAMES,
    "lidar_sweeps": LIDAR_SWEEPS,
    "radar_detections": RADAR_DETECTIONS,
    "odd_context": ODD_CONTEXT,
}

CAN_PREFIX = "can__"


def can_table_name(message_name: str) -> str:
    return f"{CAN_PREFIX}{message_name}"


def can_message_schema(message, with_ranges: bool = False) -> pa.DataFrameSchema:
    """Schema of one decoded DBC message table; ``with_ranges`` adds the DBC min/max as checks."""
    cols: dict[str, pa.Column] = {**KEYS, **TIME}
    for sig in message.signals:
        checks = []
        if with_ranges and sig.minimum is not None and sig.maximum is not None and sig.minimum < sig.maximum:
            checks.append(pa.Check.in_range(float(sig.minimum), float(sig.maximum), ignore_na=True))
        cols[sig.name] = pa.Column(float, checks, nullable=True)
    return pa.DataFrameSchema(cols, name=can_table_name(message.name))


def schema_for(table_name: str, db=None, with_ranges: bool = False) -> pa.DataFrameSchema:
    if table_name in FIXED:
        return FIXED[table_name]
    if table_name.startswith(CAN_PREFIX) and db is not None:
        return can_message_schema(db.get_message_by_name(table_name[len(CAN_PREFIX) :]), with_ranges)
    raise KeyError(f"no schema for table {table_name!r}")
