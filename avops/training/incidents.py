"""The incident library: historical incidents as OpenSCENARIO files plus their recorded frames.

An incident enters the library from the field: a reviewer marks a review case as an
incident (``frame_properties.incident_report`` in the returned OpenLABEL). The frames,
their reviewed labels and an OpenSCENARIO 1.2 description of the situation (ego, the
critical road users placed from their boxes, time of day and weather) are stored under
``AVOPS_HOME/incidents/<id>/``; the .xosc is validated against the standard's XSD.

Every candidate is replayed on every incident; an incident the production model handled
and the candidate misses is a regression that blocks promotion.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from avops.home import HomeLayout
from avops.store import ObjectStore, atomic_write_bytes, atomic_write_json, sha256_bytes
from avops.training.slices import match_objects

OSC_MINOR = 2
DEFAULT_MIN_RECALL = 0.5
CAMERA_HFOV_DEG = 120.0  # front camera (CAM-8MP-FC120-*): used to place road users from their boxes
TYPICAL_HEIGHT_M = {"pedestrian": 1.75, "cyclist": 1.75, "car": 1.5, "truck": 3.2}
NIGHT_HOUR = {"day": 12, "dusk": 19, "night": 23}


@dataclass
class IncidentFrame:
    frame_index: int
    timestamp: float
    image_sha256: str
    boxes: list[list[float]]
    classes: list[str]


@dataclass
class Incident:
    id: str
    cohort: str
    drive_id: str
    description: str
    odd: dict
    critical_classes: list[str]
    frames: list[IncidentFrame]
    source: dict  # who reported it, from which review file, when
    min_recall: float = DEFAULT_MIN_RECALL
    scenario_sha256: str = ""
    image_size: tuple[int, int] = (0, 0)  # (height, width) of the recorded frames
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Incident":
        d = dict(d)
        d["frames"] = [IncidentFrame(**f) for f in d["frames"]]
        d["image_size"] = tuple(d.get("image_size") or (0, 0))
        return cls(**d)


def incident_id(drive_id: str, frame_indices: list[int]) -> str:
    return "inc-" + hashlib.sha256(json.dumps([drive_id, sorted(frame_indices)]).encode()).hexdigest()[:12]


def library_dir(home: HomeLayout) -> Path:
    return home.root / "incidents"


# ---------------------------------------------------------------------------- OpenSCENARIO


def _place(box: list[float], cls: str, size: tuple[int, int]) -> tuple[float, float]:
    """Longitudinal and lateral distance (m) of a road user from its box height and centre (pinhole camera)."""
    h_img, w_img = size
    f = (w_img / 2) / math.tan(math.radians(CAMERA_HFOV_DEG / 2))
    h_px = max(box[3] - box[1], 1.0)
    dist = f * TYPICAL_HEIGHT_M.get(cls, 1.5) / h_px
    lateral = -((box[0] + box[2]) / 2 - w_img / 2) * dist / f  # OpenSCENARIO y points left
    return round(dist, 2), round(lateral, 2)


def scenario_xml(inc: Incident, ego_speed_mps: float = 8.0) -> bytes:
    """The incident as an OpenSCENARIO 1.2 document (scenariogeneration), positions reconstructed from frame 0."""
    from scenariogeneration import xosc

    first = inc.frames[0]
    ego_bb = xosc.BoundingBox(1.9, 4.7, 1.5, 1.4, 0.0, 0.75)
    axle = xosc.Axle(0.5, 0.7, 1.6, 2.8, 0.35)
    rear = xosc.Axle(0.0, 0.7, 1.6, 0.0, 0.35)
    entities = xosc.Entities()
    entities.add_scenario_object("Ego", xosc.Vehicle("ego", xosc.VehicleCategory.car, ego_bb, axle, rear, 50, 4, 9))
    init = xosc.Init()
    hour = NIGHT_HOUR.get(str(inc.odd.get("illumination")), 12)
    dt = datetime.fromtimestamp(first.timestamp)
    weather = str(inc.odd.get("weather", "clear"))
    precipitation = {"rain": xosc.Precipitation(xosc.PrecipitationType.rain, 0.6),
                     "snow": xosc.Precipitation(xosc.PrecipitationType.snow, 0.6)}.get(weather,
                                                                                        xosc.Precipitation(xosc.PrecipitationType.dry, 0.0))
    env = xosc.Environment(
        "incident_environment",
        xosc.TimeOfDay(False, dt.year, dt.month, dt.day, hour, 0, 0),
        xosc.Weather(fog=xosc.Fog(60 if weather == "fog" else 10000), precipitation=precipitation),
        xosc.RoadCondition(0.6 if weather in ("rain", "snow") else 1.0),
    )
    init.add_global_action(xosc.EnvironmentAction(env))
    init.add_init_action("Ego", xosc.TeleportAction(xosc.WorldPosition(0, 0, 0, 0, 0, 0)))
    init.add_init_action("Ego", xosc.AbsoluteSpeedAction(ego_speed_mps, xosc.TransitionDynamics(
        xosc.DynamicsShapes.step, xosc.DynamicsDimension.time, 0)))
    for i, (box, cls) in enumerate(zip(first.boxes, first.classes)):
        name = f"{cls}_{i}"
        dist, lat = _place(box, cls, inc.image_size)
        if cls == "pedestrian":
            obj = xosc.Pedestrian(name, 75, xosc.PedestrianCategory.pedestrian, xosc.BoundingBox(0.6, 0.5, 1.75, 0, 0, 0.9), model="pedestrian")
        else:
            cat = {"cyclist": xosc.VehicleCategory.bicycle, "truck": xosc.VehicleCategory.truck}.get(cls, xosc.VehicleCategory.car)
            dims = {"cyclist": (0.7, 1.8, 1.75), "truck": (2.5, 9.0, 3.2)}.get(cls, (1.9, 4.6, 1.5))
            obj = xosc.Vehicle(name, cat, xosc.BoundingBox(*dims, dims[1] / 3, 0, dims[2] / 2), axle, rear, 30, 3, 8)
        entities.add_scenario_object(name, obj)
        init.add_init_action(name, xosc.TeleportAction(xosc.WorldPosition(dist + 2.4, lat, 0, 0, 0, 0)))
    duration = max(inc.frames[-1].timestamp - first.timestamp, 1.0)
    stop = xosc.ValueTrigger("incident_end", 0, xosc.ConditionEdge.none,
                             xosc.SimulationTimeCondition(round(duration + 1.0, 2), xosc.Rule.greaterThan), "stop")
    sb = xosc.StoryBoard(init, stop)
    desc = f"{inc.id}: {inc.description} ({inc.cohort}, drive {inc.drive_id})"
    sc = xosc.Scenario(desc, "avops incident library", xosc.ParameterDeclarations(), entities, sb, xosc.RoadNetwork(),
                       xosc.Catalog(), osc_minor_version=OSC_MINOR, creation_date=datetime(2000, 1, 1))
    buf = io.BytesIO()
    tree = ET.ElementTree(sc.get_element())  # write_xml wants a path; serialize in memory for an atomic write
    ET.indent(tree)
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    return buf.getvalue()


def xsd_path(minor: int = OSC_MINOR) -> Path:
    """The OpenSCENARIO XSD that ships with scenariogeneration (``site-packages/schemas``)."""
    import scenariogeneration

    p = Path(scenariogeneration.__file__).resolve().parent.parent / "schemas" / f"OpenSCENARIO_1_{minor}.xsd"
    if not p.exists():
        raise FileNotFoundError(f"OpenSCENARIO 1.{minor} XSD not found at {p}: reinstall scenariogeneration (see requirements.lock)")
    return p


def validate_scenario(data: bytes, minor: int = OSC_MINOR) -> list[str]:
    """Schema errors of an OpenSCENARIO document (empty when valid)."""
    schema = _schema(str(xsd_path(minor)))
    return [f"{e.path}: {e.reason}" for e in schema.iter_errors(io.BytesIO(data))][:20]


_SCHEMAS: dict[str, object] = {}


def _schema(path: str):
    import xmlschema

    if path not in _SCHEMAS:
        _SCHEMAS[path] = xmlschema.XMLSchema(path)
    return _SCHEMAS[path]


# ---------------------------------------------------------------------------- library


def add_incident(home: HomeLayout, store: ObjectStore, inc: Incident) -> tuple[Incident, bool]:
    """Write an incident (scenario + record) atomically; an incident already in the library is kept as is."""
    folder = library_dir(home) / inc.id
    if (folder / "incident.json").exists():
        return load_incident(folder), False
    if not inc.frames:
        raise ValueError(f"incident {inc.id} has no frames")
    missing = [f.image_sha256 for f in inc.frames if not store.has(f.image_sha256)]
    if missing:
        raise FileNotFoundError(f"incident {inc.id}: {len(missing)} frame(s) not in the object store, e.g. {missing[0]}")
    xml = scenario_xml(inc)
    errors = validate_scenario(xml)
    if errors:
        raise ValueError(f"incident {inc.id}: generated OpenSCENARIO is not valid against {xsd_path().name}: {errors[:3]}")
    inc.scenario_sha256 = sha256_bytes(xml)
    atomic_write_bytes(folder / "scenario.xosc", xml)
    atomic_write_json(folder / "incident.json", asdict(inc))  # written last: its presence means complete
    return inc, True


def load_incident(folder: Path) -> Incident:
    inc = Incident.from_dict(json.loads((folder / "incident.json").read_text()))
    xml = (folder / "scenario.xosc").read_bytes()
    if sha256_bytes(xml) != inc.scenario_sha256:
        raise ValueError(f"{folder / 'scenario.xosc'}: digest does not match incident.json (edited or corrupted)")
    return inc


def load_library(home: HomeLayout) -> list[Incident]:
    root = library_dir(home)
    return [load_incident(p.parent) for p in sorted(root.glob("*/incident.json"))] if root.exists() else []


def library_digest(incidents: list[Incident]) -> str:
    """One digest over the library's scenarios and frames, recorded by every replay."""
    return sha256_bytes(json.dumps(sorted((i.id, i.scenario_sha256, [f.image_sha256 for f in i.frames]) for i in incidents)).encode())


# ---------------------------------------------------------------------------- replay


def replay(model, store: ObjectStore, incidents: list[Incident]) -> pd.DataFrame:
    """Per incident: critical objects, how many the model detected, recall and whether it passed."""
    from avops.training.data import load_images

    rows = []
    for inc in incidents:
        dets = model.predict(load_images(store, [f.image_sha256 for f in inc.frames]))
        gt, _ = match_objects([d.boxes for d in dets], [list(d.classes) for d in dets], [d.scores for d in dets],
                              [f.boxes for f in inc.frames], [f.classes for f in inc.frames])
        crit = gt[gt["cls"].isin(inc.critical_classes)] if inc.critical_classes else gt
        n, hit = len(crit), int(crit["matched"].sum())
        recall = hit / n if n else float("nan")
        rows.append({"incident": inc.id, "description": inc.description, "cohort": inc.cohort, "frames": len(inc.frames),
                     "critical_objects": n, "detected": hit, "recall": recall, "min_recall": inc.min_recall,
                     "passed": bool(n and recall >= inc.min_recall)})
    return pd.DataFrame(rows, columns=["incident", "description", "cohort", "frames", "critical_objects", "detected", "recall",
                                       "min_recall", "passed"])


def regressions(candidate: pd.DataFrame, production: pd.DataFrame | None) -> list[str]:
    """Incidents the production model passed and the candidate fails (these block promotion)."""
    if production is None or production.empty or candidate.empty:
        return []
    prod_pass = set(production.loc[production["passed"], "incident"])
    return sorted(set(candidate.loc[~candidate["passed"], "incident"]) & prod_pass)
