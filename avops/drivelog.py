"""The MCAP drive-log format avops reads: topics, schemas and encodings.

This is a format specification shared by whoever writes drive logs (a vehicle's data
logger, or the fleet simulator) and ingest, which reads them. Camera and LiDAR use the
Foxglove protobuf schemas that common loggers emit; CAN frames are batched (one MCAP
message per ~100 ms of bus traffic), because per-message overhead in MCAP readers is
microseconds and a bus carries thousands of frames per second.
"""

from __future__ import annotations

import json
from functools import lru_cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

TOPIC_CAMERA = "/camera/front/compressed"
TOPIC_LIDAR = "/lidar/top/points"
TOPIC_RADAR = "/radar/front/detections"
TOPIC_CAN = "/can/frames"
TOPIC_CONTEXT = "/vehicle/context"
METADATA_DRIVE = "avops.drive"
PROFILE = "avops-drive-v1"

CAN_BATCH_SCHEMA = "avops.CanFrameBatch"
RADAR_SCHEMA_NAME = "avops.RadarDetections"
CONTEXT_SCHEMA_NAME = "avops.DriveContext"

RADAR_JSON_SCHEMA = {
    "title": RADAR_SCHEMA_NAME,
    "type": "object",
    "properties": {
        "timestamp_ns": {"type": "integer"},
        "detections": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {k: {"type": "number"} for k in ("range_m", "azimuth_deg", "range_rate_mps", "rcs_dbsm", "snr_db")},
                "required": ["range_m", "azimuth_deg", "range_rate_mps"],
            },
        },
    },
    "required": ["timestamp_ns", "detections"],
}

# The vehicle's own view of its operating conditions: light sensor (illumination),
# rain/fog detection from wipers and camera, road type and roadworks from the
# navigation map. Named after ISO 34503 attributes.
CONTEXT_JSON_SCHEMA = {
    "title": CONTEXT_SCHEMA_NAME,
    "type": "object",
    "properties": {
        "timestamp_ns": {"type": "integer"},
        "illumination": {"enum": ["day", "dusk", "night"]},
        "weather": {"enum": ["clear", "rain", "fog", "snow"]},
        "road_type": {"enum": ["motorway", "urban", "rural"]},
        "roadworks": {"type": "boolean"},
    },
    "required": ["timestamp_ns", "illumination", "weather", "road_type", "roadworks"],
}


@lru_cache(maxsize=1)
def can_batch_class():
    """The protobuf class of a CAN frame batch (built from a descriptor, no protoc step).

    Fields are parallel arrays; ``data`` concatenates every frame's payload (``dlc``
    bytes each), which decodes into numpy without a per-frame loop.
    """
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="avops/can_frame_batch.proto", package="avops", syntax="proto3")
    msg = fdp.message_type.add(name="CanFrameBatch")
    for number, (name, typ) in enumerate(
        [
            ("timestamp_ns", F.TYPE_FIXED64),
            ("frame_id", F.TYPE_UINT32),
            ("is_extended", F.TYPE_BOOL),
            ("dlc", F.TYPE_UINT32),
            ("channel", F.TYPE_UINT32),
        ],
        start=1,
    ):
        msg.field.add(name=name, number=number, type=typ, label=F.LABEL_REPEATED)
    msg.field.add(name="data", number=6, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(CAN_BATCH_SCHEMA))


def json_schema_bytes(schema: dict) -> bytes:
    return json.dumps(schema, sort_keys=True).encode()
