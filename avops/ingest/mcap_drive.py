"""Read one MCAP drive log into column arrays, or fail with a quarantine reason.

The whole file is read before anything is returned, so a file that breaks halfway
yields nothing (and is quarantined) instead of a partial drive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory

from avops import drivelog
from avops.can.frames import CanFrames
from avops.ingest.quarantine import IngestError

MCAP_MAGIC = b"\x89MCAP0\r\n"

# topic -> (accepted schema name, schema encoding, message encoding)
EXPECTED = {
    drivelog.TOPIC_CAMERA: ("foxglove.CompressedImage", "protobuf", "protobuf"),
    drivelog.TOPIC_LIDAR: ("foxglove.PointCloud", "protobuf", "protobuf"),
    drivelog.TOPIC_CAN: (drivelog.CAN_BATCH_SCHEMA, "protobuf", "protobuf"),
    drivelog.TOPIC_RADAR: (drivelog.RADAR_SCHEMA_NAME, "jsonschema", "json"),
    drivelog.TOPIC_CONTEXT: (drivelog.CONTEXT_SCHEMA_NAME, "jsonschema", "json"),
}


@dataclass
class McapDrive:
    metadata: dict[str, str]
    can: CanFrames
    camera: list[tuple[int, str, bytes]] = field(default_factory=list)  # (ns, format, bytes)
    lidar: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (ns, float32 (n, 4))
    radar: list[dict] = field(default_factory=list)  # one row per detection, with timestamp_ns
    context: list[dict] = field(default_factory=list)
    ignored_topics: dict[str, int] = field(default_factory=dict)


def _pointcloud_xyzi(msg) -> np.ndarray:
    names = {f.name: f for f in msg.fields}
    if not {"x", "y", "z"} <= set(names) or any(f.type != 7 for f in msg.fields):  # 7 = FLOAT32
        raise ValueError("point cloud must have float32 x, y, z fields")
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(-1, msg.point_stride)
    cols = []
    for n in ("x", "y", "z", "intensity"):
        if n in names:
            off = names[n].offset
            cols.append(raw[:, off : off + 4].copy().view(np.float32)[:, 0])
        else:
            cols.append(np.zeros(len(raw), np.float32))
    return np.stack(cols, axis=1)


def _can_batch(msg) -> CanFrames:
    n = len(msg.frame_id)
    dlc = np.asarray(msg.dlc, dtype=np.uint8)
    if len(msg.timestamp_ns) != n or len(dlc) != n or int(dlc.sum()) != len(msg.data):
        raise ValueError("CAN batch arrays disagree in length")
    width = 64 if n and dlc.max() > 8 else 8
    data = np.zeros((n, width), np.uint8)
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(dlc[:-1], dtype=np.int64)]) if n else np.zeros(0, np.int64)
    col = np.arange(width)
    mask = col[None, :] < dlc[:, None]
    data[mask] = flat[(starts[:, None] + col[None, :])[mask]]
    channel = np.asarray(msg.channel, dtype=np.uint8) if len(msg.channel) == n else np.zeros(n, np.uint8)
    ext = np.asarray(msg.is_extended, dtype=bool) if len(msg.is_extended) == n else np.zeros(n, bool)
    return CanFrames(
        timestamp=np.asarray(msg.timestamp_ns, dtype=np.float64) / 1e9,
        frame_id=np.asarray(msg.frame_id, dtype=np.uint32),
        is_extended=ext,
        dlc=dlc,
        data=data,
        channel=channel,
    )


def read_mcap_drive(path: Path) -> McapDrive:
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise IngestError(path, "empty")
    with open(path, "rb") as f:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise IngestError(path, "not_the_declared_format", "no MCAP magic bytes at the start of the file")
        f.seek(0)
        try:
            return _read(path, f)
        except IngestError:
            raise
        except (McapError, EOFError, OSError, ValueError, KeyError, IndexError, json.JSONDecodeError) as exc:
            reason = "truncated" if _looks_truncated(exc) else "corrupt"
            raise IngestError(path, reason, f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # protobuf DecodeError and friends
            raise IngestError(path, "corrupt", f"{type(exc).__name__}: {exc}") from exc


def _looks_truncated(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(k in text for k in ("endofstream", "end of stream", "truncat", "recordlengthlimit", "eof", "footer", "magic", "unexpected end"))


def _read(path: Path, f) -> McapDrive:
    reader = make_reader(f, decoder_factories=[DecoderFactory()])
    summary = reader.get_summary()
    if summary is None:
        raise IngestError(path, "truncated", "the MCAP has no summary section (the logger did not finish the file)")
    metadata: dict[str, str] = {}
    for record in reader.iter_metadata():
        if record.name == drivelog.METADATA_DRIVE:
            metadata = dict(record.metadata)
    if not metadata:
        raise IngestError(path, "missing_metadata", f"no {drivelog.METADATA_DRIVE!r} metadata record")

    topics = {}
    for channel in summary.channels.values():
        schema = summary.schemas.get(channel.schema_id)
        expected = EXPECTED.get(channel.topic)
        if expected is None:
            continue
        got = (schema.name if schema else "", schema.encoding if schema else "", channel.message_encoding)
        if got != expected:
            raise IngestError(path, "unsupported_schema", f"topic {channel.topic} has schema {got}, expected {expected}")
        topics[channel.id] = channel.topic

    drive = McapDrive(metadata=metadata, can=CanFrames.empty())
    can_batches: list[CanFrames] = []
    factory = DecoderFactory()
    decoders = {}
    for schema, channel, message in reader.iter_messages(log_time_order=False):
        topic = topics.get(channel.id)
        if topic is None:
            drive.ignored_topics[channel.topic] = drive.ignored_topics.get(channel.topic, 0) + 1
            continue
        if channel.message_encoding == "json":
            payload = json.loads(message.data)
            if topic == drivelog.TOPIC_RADAR:
                for det in payload["detections"]:
                    drive.radar.append({"timestamp_ns": int(payload["timestamp_ns"]), **det})
            else:
                drive.context.append(payload)
            continue
        if schema.id not in decoders:
            decoders[schema.id] = factory.decoder_for("protobuf", schema)
        msg = decoders[schema.id](message.data)
        if topic == drivelog.TOPIC_CAN:
            can_batches.append(_can_batch(msg))
        elif topic == drivelog.TOPIC_CAMERA:
            ts = msg.timestamp.ToNanoseconds() or message.log_time
            drive.camera.append((ts, msg.format, bytes(msg.data)))
        elif topic == drivelog.TOPIC_LIDAR:
            ts = msg.timestamp.ToNanoseconds() or message.log_time
            drive.lidar.append((ts, _pointcloud_xyzi(msg)))
    if can_batches:
        drive.can = CanFrames.concat(can_batches).sort_by_time()
    drive.camera.sort(key=lambda x: x[0])
    drive.lidar.sort(key=lambda x: x[0])
    drive.context.sort(key=lambda x: x["timestamp_ns"])
    return drive
