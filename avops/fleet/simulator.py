"""The seeded fleet simulator: drive logs in real formats, delivered to a landing zone.

Each vehicle of each cohort in the fleet registry drives a few drives; a drive is one
MCAP file (camera, LiDAR, radar, batched CAN frames, vehicle context) or, for vehicles
with an older CAN-only data logger, a BLF/ASC/MF4 file. Ground truth (object boxes,
ODD segments including vulnerable road users, component wear) goes to a separate
folder that only tests and the simulated reviewer may read.

Everything is derived from (seed, cohort, vehicle, drive), so a rerun reproduces the
same bytes and skips drives whose ground truth already records the same parameters.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from mcap.writer import CompressionType, Writer
from mcap_protobuf.schema import register_schema
from PIL import Image

from avops import drivelog
from avops.can.logs import write_can_log
from avops.curation.campaigns import Campaign
from avops.fleet import scene
from avops.fleet.can_bus import encode_bus
from avops.fleet.odd import Segment, sample_segments, sample_start_hour, segment_at
from avops.fleet.vehicle import WearState, age_between_drives, initial_wear, simulate_signals
from avops.fleet.battery import pack_aging
from avops.fleet.workshop import ServiceOrder, plan_visits, service_orders_csv
from avops.home import HomeLayout
from avops.fleet_registry import Cohort, FleetRegistry
from avops.store import atomic_write_bytes, atomic_write_json

SIM_VERSION = "2"  # 2: workshop visits replace worn pads


@dataclass(frozen=True)
class Profile:
    drives_per_vehicle: int
    drive_seconds: float
    days_between_drives: float
    camera_hz: float
    lidar_hz: float
    radar_hz: float
    can_batch_hz: float

    @classmethod
    def from_registry(cls, registry: FleetRegistry, name: str) -> Profile:
        profiles = registry.simulation.get("profiles", {})
        if name not in profiles:
            raise KeyError(f"{registry.path}: no simulation profile {name!r} (have: {', '.join(profiles)})")
        return cls(**profiles[name])


@dataclass(frozen=True)
class Season:
    """Extra drives of one cohort after its planned ones, optionally on a new powertrain calibration.

    What a fleet's next months look like: e.g. the OEM flashes a recalibrated powertrain
    (``PTC-MQB-24.1``) onto older vehicles, and their telemetry shifts.
    """

    id: str
    cohort: str
    drives_per_vehicle: int = 2
    days_after_plan: float = 60.0
    powertrain_calibration: str | None = None


@dataclass
class DriveResult:
    cohort: str
    vehicle_id: str
    drive_id: str
    path: Path
    format: str
    skipped: bool


@dataclass
class SimulationReport:
    drives: list[DriveResult] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(not d.skipped for d in self.drives)

    @property
    def skipped(self) -> int:
        return sum(d.skipped for d in self.drives)


def _seed(*parts: object) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


def _params_digest(seed: int, cohort: Cohort, profile: Profile, start: str) -> str:
    blob = json.dumps([SIM_VERSION, seed, cohort.id, cohort.model_year, cohort.region, cohort.dbc, cohort.powertrain_calibration,
                       asdict(profile), start])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_drives(seed: int, cohort: Cohort, vehicle_index: int, profile: Profile, start_date: datetime) -> list[tuple[datetime, WearState]]:
    """Start time and wear state of each logged drive of one vehicle."""
    rng = np.random.default_rng(_seed(seed, cohort.id, vehicle_index, "plan"))
    day0 = start_date + timedelta(days=float(rng.uniform(0, profile.days_between_drives)))
    wear = initial_wear(rng, cohort.model_year, day0)
    plan = []
    for i in range(profile.drives_per_vehicle):
        day = day0 + timedelta(days=i * profile.days_between_drives + float(rng.uniform(-2, 2)))
        start = day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=sample_start_hour(rng))
        if i:
            wear = age_between_drives(rng, wear, profile.days_between_drives)
        plan.append((start, wear))
    return plan


def plan_vehicle(seed: int, cohort: Cohort, vehicle_index: int, profile: Profile,
                 start_date: datetime) -> tuple[list[tuple[datetime, WearState]], list[ServiceOrder]]:
    """The drive plan with workshop visits applied (replaced pads), and the visits' service orders."""
    plan = plan_drives(seed, cohort, vehicle_index, profile, start_date)
    rng = np.random.default_rng(_seed(seed, cohort.id, vehicle_index, "workshop"))
    until = plan[-1][0] + timedelta(days=profile.days_between_drives)
    return plan_visits(rng, cohort.vehicle_ids()[vehicle_index], plan, until)


def simulate_fleet(
    registry: FleetRegistry,
    home: HomeLayout,
    profile: str = "demo",
    seed: int | None = None,
    cohorts: list[str] | None = None,
    start_date: str | None = None,
    progress: Callable[[DriveResult], None] | None = None,
    campaign: Campaign | None = None,
    season: Season | None = None,
) -> SimulationReport:
    """Simulate every vehicle of the selected cohorts into ``home.landing``.

    With a ``campaign``, only that campaign's cohort drives: each vehicle logs
    ``drives_per_vehicle`` extra drives, after its planned ones, while the campaign's
    ODD conditions hold (as a fleet's trigger-based logging would). With a ``season``, that
    cohort's vehicles log the season's extra drives later, on its powertrain calibration.
    Without either, each cohort's workshop export (``workshop/<cohort>/service_orders.csv``)
    is written too.
    """
    prof = Profile.from_registry(registry, profile)
    seed = int(seed if seed is not None else registry.simulation.get("seed", 0))
    start_s = start_date or str(registry.simulation.get("start_date", "2026-01-01"))
    start = datetime.fromisoformat(start_s).replace(tzinfo=timezone.utc)
    report = SimulationReport()
    if campaign is not None and season is not None:
        raise ValueError("simulate a campaign or a season, not both at once")
    if campaign is not None or season is not None:
        cohorts = [(campaign or season).cohort]  # type: ignore[union-attr]
    selected = [registry.cohort(c) for c in cohorts] if cohorts else list(registry.cohorts)
    for cohort in selected:
        orders: list[ServiceOrder] = []
        digest = _params_digest(seed, cohort, prof, start_s + (campaign.id if campaign else "") + (season.id if season else ""))
        packs = pack_aging(home, cohort.id)  # traction packs age with their simulated cells (when batteries were simulated)
        if packs:
            digest = hashlib.sha256(f"{digest}:{next(iter(packs.values())).digest}".encode()).hexdigest()[:16]
        driven = replace(cohort, powertrain_calibration=season.powertrain_calibration) if season and season.powertrain_calibration else cohort
        for vi, vehicle_id in enumerate(cohort.vehicle_ids()):
            plan, visits = plan_vehicle(seed, cohort, vi, prof, start)
            orders.extend(visits)
            if season is not None:
                last, wear = plan[-1]
                drives = []
                for k in range(season.drives_per_vehicle):
                    offset_min = zlib.crc32(f"{season.id}:{vi}:{k}".encode()) % 1440
                    when = last + timedelta(days=season.days_after_plan + prof.days_between_drives * k, minutes=offset_min)
                    drives.append((2000 + k, when, wear, None))
            elif campaign is None:
                drives = [(di, when, wear, None) for di, (when, wear) in enumerate(plan)]
            else:
                last, wear = plan[-1]
                drives = []
                for k in range(campaign.drives_per_vehicle):
                    target = campaign.targets[(vi + k) % len(campaign.targets)]
                    # campaign drives get their own times (and so drive ids): landed files are never overwritten
                    offset_min = zlib.crc32(f"{campaign.id}:{k}".encode()) % 1440
                    when = last + timedelta(days=prof.days_between_drives * (k + 1), minutes=offset_min)
                    drives.append((1000 + k, when, wear, target.where))
            for di, when, wear, where in drives:
                if vehicle_id in packs:  # the pack's capacity and resistance from its cell, not the generic model
                    fade, r_rel = packs[vehicle_id].at(when)
                    wear = replace(wear, battery_capacity_fade=fade, battery_resistance_mohm=plan[0][1].battery_resistance_mohm * r_rel)
                result = simulate_drive(home, driven, vi, vehicle_id, di, when, wear, prof, seed, digest, where)
                report.drives.append(result)
                if progress:
                    progress(result)
        if campaign is None and season is None:
            atomic_write_bytes(home.workshop / cohort.id / "service_orders.csv", service_orders_csv(orders))
    return report


def apply_conditions(segments: list[Segment], where: dict | None) -> list[Segment]:
    """Force a campaign's ODD conditions onto a drive's segments."""
    if not where:
        return segments
    out = []
    for s in segments:
        odd, vru = s.odd, s.vru_density
        for key, value in where.items():
            if key == "has_vru":
                odd, vru = replace(odd, road_type="urban"), max(vru, 2.0)
            elif key in ("illumination", "weather", "road_type", "roadworks"):
                odd = replace(odd, **{key: value})
            else:
                raise KeyError(f"campaign condition {key!r} is not an ODD attribute the simulator knows")
        out.append(Segment(s.t_start, s.t_end, odd, vru))
    return out


def drive_id_for(vehicle_id: str, when: datetime) -> str:
    return f"{vehicle_id}_{when:%Y%m%dT%H%M%S}"


def simulate_drive(
    home: HomeLayout,
    cohort: Cohort,
    vehicle_index: int,
    vehicle_id: str,
    drive_index: int,
    when: datetime,
    wear: WearState,
    prof: Profile,
    seed: int,
    params_digest: str,
    conditions: dict | None = None,
) -> DriveResult:
    fmt = cohort.logger_for(vehicle_index)
    drive_id = drive_id_for(vehicle_id, when)
    landing = home.landing / cohort.id / vehicle_id / f"{drive_id}.{fmt}"
    truth_path = home.sim_truth / cohort.id / vehicle_id / f"{drive_id}.json"
    if truth_path.exists():
        try:
            if json.loads(truth_path.read_text()).get("params_digest") == params_digest:
                return DriveResult(cohort.id, vehicle_id, drive_id, landing, fmt, skipped=True)
        except (OSError, json.JSONDecodeError):
            pass

    rng = np.random.default_rng(_seed(seed, cohort.id, vehicle_index, drive_index, "drive"))
    segments = apply_conditions(sample_segments(rng, cohort.region, when, prof.drive_seconds), conditions)
    series, wear_after = simulate_signals(rng, segments, prof.drive_seconds, when, cohort.region, cohort.model_year, wear,
                                          cohort.powertrain_calibration)
    t0 = when.timestamp()
    frames = encode_bus(rng, cohort.dbc_spec, series, t0)

    truth: dict = {
        "params_digest": params_digest,
        "cohort": cohort.id,
        "vehicle_id": vehicle_id,
        "drive_id": drive_id,
        "format": fmt,
        "start": when.isoformat(),
        "campaign_conditions": conditions,
        "duration_s": prof.drive_seconds,
        "powertrain_calibration": cohort.powertrain_calibration,
        "wear_before": wear.to_dict(),
        "wear_after": wear_after.to_dict(),
        "segments": [
            {"t_start": s.t_start, "t_end": s.t_end, **asdict(s.odd), "vru_density": s.vru_density} for s in segments
        ],
        "camera_frames": [],
    }
    landing.parent.mkdir(parents=True, exist_ok=True)
    partial = landing.with_name(f".{landing.stem}.partial{landing.suffix}")
    if fmt == "mcap":
        _write_mcap(partial, rng, cohort, vehicle_id, drive_id, when, segments, series, frames, prof, truth)
    else:
        write_can_log(partial, frames)
    os.replace(partial, landing)  # the landing protocol: a file appears complete or not at all
    atomic_write_json(truth_path, truth)
    return DriveResult(cohort.id, vehicle_id, drive_id, landing, fmt, skipped=False)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _write_mcap(
    path: Path,
    rng: np.random.Generator,
    cohort: Cohort,
    vehicle_id: str,
    drive_id: str,
    when: datetime,
    segments: list[Segment],
    series: dict[str, np.ndarray],
    frames,
    prof: Profile,
    truth: dict,
) -> None:
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
    from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud

    t0 = when.timestamp()
    ns = lambda t: int(round((t0 + t) * 1e9))  # noqa: E731
    CanBatch = drivelog.can_batch_class()
    with open(path, "wb") as f:
        w = Writer(f, compression=CompressionType.ZSTD)
        w.start(profile=drivelog.PROFILE, library="avops-fleet-simulator")
        channels = {
            drivelog.TOPIC_CAMERA: (register_schema(w, CompressedImage), "protobuf"),
            drivelog.TOPIC_LIDAR: (register_schema(w, PointCloud), "protobuf"),
            drivelog.TOPIC_CAN: (register_schema(w, CanBatch), "protobuf"),
            drivelog.TOPIC_RADAR: (
                w.register_schema(drivelog.RADAR_SCHEMA_NAME, "jsonschema", drivelog.json_schema_bytes(drivelog.RADAR_JSON_SCHEMA)),
                "json",
            ),
            drivelog.TOPIC_CONTEXT: (
                w.register_schema(drivelog.CONTEXT_SCHEMA_NAME, "jsonschema", drivelog.json_schema_bytes(drivelog.CONTEXT_JSON_SCHEMA)),
                "json",
            ),
        }
        chan = {topic: w.register_channel(topic, enc, schema_id) for topic, (schema_id, enc) in channels.items()}
        w.add_metadata(
            drivelog.METADATA_DRIVE,
            {
                "drive_id": drive_id,
                "vehicle_id": vehicle_id,
                "cohort": cohort.id,
                "platform": cohort.platform,
                "model_year": str(cohort.model_year),
                "start_time": when.isoformat(),
                "dbc": cohort.dbc,
                "ecus": json.dumps([asdict(e) for e in cohort.ecus]),
            },
        )
        messages: list[tuple[int, int, bytes]] = []  # (log_time, channel, data)

        # CAN: batches of ~1/can_batch_hz seconds of bus traffic.
        rel = frames.timestamp - t0
        edges = np.arange(0, prof.drive_seconds + 1e-9, 1 / prof.can_batch_hz)
        bins = np.searchsorted(rel, edges)
        for a, b in zip(bins[:-1], bins[1:]):
            if b <= a:
                continue
            batch = CanBatch(
                timestamp_ns=[int(x) for x in np.rint(frames.timestamp[a:b] * 1e9)],
                frame_id=frames.frame_id[a:b].tolist(),
                is_extended=frames.is_extended[a:b].tolist(),
                dlc=frames.dlc[a:b].tolist(),
                channel=frames.channel[a:b].tolist(),
                data=b"".join(bytes(frames.data[i, : frames.dlc[i]]) for i in range(a, b)),
            )
            messages.append((int(round(frames.timestamp[b - 1] * 1e9)), chan[drivelog.TOPIC_CAN], batch.SerializeToString()))

        # Vehicle context: 1 Hz, as the light/rain sensors and the navigation map report it.
        for t in np.arange(0, prof.drive_seconds, 1.0):
            odd = segment_at(segments, t).odd
            ctx = {"timestamp_ns": ns(t), "illumination": odd.illumination, "weather": odd.weather, "road_type": odd.road_type, "roadworks": odd.roadworks}
            messages.append((ns(t), chan[drivelog.TOPIC_CONTEXT], json.dumps(ctx).encode()))

        # Perception sensors share one evolving scene, ticked at the fastest sensor rate.
        tick = 1 / max(prof.camera_hz, prof.lidar_hz, prof.radar_hz)
        speed_mps = series["speed_kph"] / 3.6
        travelled = np.cumsum(speed_mps) * 0.01  # metres, keeps roadside scenery consistent along the drive
        layout_seed = zlib.crc32(drive_id.encode())
        objects = scene.sample_objects(rng, segments[0].odd)
        last = {"camera": -1, "lidar": -1, "radar": -1}
        frame_index = 0
        for step, t in enumerate(np.arange(0, prof.drive_seconds, tick)):
            seg = segment_at(segments, t)
            k = min(int(t / 0.01), len(speed_mps) - 1)
            ego, ego_s = float(speed_mps[k]), float(travelled[k])
            if step:
                objects = scene.step_objects(objects, tick, ego, rng, seg.odd)
            if int(t * prof.camera_hz) != last["camera"]:
                last["camera"] = int(t * prof.camera_hz)
                cam = scene.render_camera(rng, objects, seg.odd, layout_seed=layout_seed, ego_s=ego_s)
                img = CompressedImage(frame_id="camera_front", format="png", data=_png(cam.image))
                img.timestamp.FromNanoseconds(ns(t))
                messages.append((ns(t), chan[drivelog.TOPIC_CAMERA], img.SerializeToString()))
                truth["camera_frames"].append(
                    {
                        "timestamp_ns": ns(t),
                        "frame_index": frame_index,
                        "boxes": np.round(cam.boxes, 2).tolist(),
                        "classes": list(cam.classes),
                        "track_ids": [int(x) for x in cam.track_ids],
                        "occlusion": np.round(cam.occlusion, 3).tolist(),
                        **asdict(seg.odd),
                    }
                )
                frame_index += 1
            if int(t * prof.lidar_hz) != last["lidar"]:
                last["lidar"] = int(t * prof.lidar_hz)
                pts = scene.render_lidar(rng, objects, seg.odd, ego_s=ego_s).astype(np.float32)
                pc = PointCloud(
                    frame_id="lidar_top",
                    point_stride=16,
                    fields=[PackedElementField(name=n, offset=4 * i, type=PackedElementField.FLOAT32) for i, n in enumerate("x y z intensity".split())],
                    data=pts.tobytes(),
                )
                pc.timestamp.FromNanoseconds(ns(t))
                messages.append((ns(t), chan[drivelog.TOPIC_LIDAR], pc.SerializeToString()))
            if int(t * prof.radar_hz) != last["radar"]:
                last["radar"] = int(t * prof.radar_hz)
                dets = scene.render_radar(rng, objects, seg.odd, ego)
                clean = [{k: round(float(v), 3) for k, v in d.items()} for d in dets]
                messages.append((ns(t), chan[drivelog.TOPIC_RADAR], json.dumps({"timestamp_ns": ns(t), "detections": clean}).encode()))

        for log_time, channel_id, data in sorted(messages, key=lambda m: (m[0], m[1])):
            w.add_message(channel_id, log_time=log_time, data=data, publish_time=log_time)
        w.finish()
