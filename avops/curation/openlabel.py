"""Auto-labels and human review in ASAM OpenLABEL 1.0 JSON, one document per drive.

OpenLABEL is the exchange format labeling vendors and review tools read, so our labels
leave and come back in it instead of a private format. Documents are checked against the
official ASAM OpenLABEL 1.0.0 JSON schema as vendored (unmodified, with provenance) by
the ``openlabel-checker`` package, plus that package's consistency checks (dangling
references, negative box sizes, ...) which the schema alone cannot express.

Encoding (all of it allowed by the official schema):

* ``metadata``: ``schema_version`` "1.0.0", ``name`` (the drive), ``annotator``,
  ``file_version`` (the label version), ``comment``; the schema allows extra metadata
  keys, which carry ``drive_id``, ``vehicle_id``, ``cohort`` and ``label_version``.
* ``ontologies``: ``{"0": <ontology uri>}``; objects and the ODD context point at it with
  ``ontology_uid`` "0", since class names only mean something relative to that URI.
* ``streams``: one camera stream; each frame names its image by content digest as the
  per-frame stream ``uri`` "sha256:<hex>" (the object store key), so a label can never
  silently refer to different pixels.
* Objects: one OpenLABEL object per uid (``type`` = ontology class); its per-frame
  ``object_data.bbox`` named "box2d" holds ``[x_center, y_center, width, height]`` with
  nested ``attributes``: ``num`` confidence, ``text`` source / reviewer / reviewed_at.
  Review fields sit on the box, not the object, because review happens per frame.
* ODD: one context (uid "0", type "odd") with per-frame ``context_data`` (``text`` for
  enumerations, ``boolean`` for roadworks). Contexts, not tags, because the ODD changes
  within a drive (dusk to night, rain starts) and the schema has frame-level contexts
  but only document-level tags.
* Review status: ``frame_properties.label_status``; ``frame_properties`` is the one
  frame-level object the schema leaves open to extra keys. A reviewer's incident
  report (the case enters the incident library) is ``frame_properties.incident_report``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from openlabel_checker.checkers import DOC_CHECKERS
from openlabel_checker.models import Severity

from avops.curation.ontology import Ontology, load_ontology
from avops.store import atomic_write_bytes, sha256_bytes

SCHEMA_PACKAGE = "openlabel_checker.schema_data"
SCHEMA_FILE = "openlabel_json_schema-v1.0.0.json"
SCHEMA_VERSION = "1.0.0"
BOX_NAME = "box2d"
ONTOLOGY_UID = "0"
ODD_CONTEXT_UID = "0"
SOURCES = ("auto", "review")
STATUSES = ("labeled", "to_review", "reviewed")
REASONS = frozenset({"schema", "unknown_class", "bad_box", "missing_field"})

_UID = re.compile(r"^(-?[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Boxes are stored as center/size; converting back costs float noise far below a pixel.
_BOX_DECIMALS = 6


class OpenLabelError(ValueError):
    """A document that cannot be written or read; ``reason`` is machine-readable so callers
    can route failures (quarantine a corrupt file, re-label an unknown class)."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown OpenLabelError reason {reason!r}")
        super().__init__(reason, detail)  # args stay (reason, detail) so it pickles
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass
class ObjectLabel:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 pixels
    cls: str
    confidence: float  # 1.0 for human labels
    source: str  # "auto" | "review"
    uid: str | None = None
    reviewer: str | None = None
    reviewed_at: str | None = None  # ISO 8601 UTC


@dataclass
class FrameLabel:
    frame_index: int
    timestamp: float  # seconds since epoch
    image_sha256: str
    odd: dict
    objects: list[ObjectLabel] = field(default_factory=list)
    status: str = "labeled"
    incident: str | None = None  # a reviewer's incident report: this case enters the incident library


# ---------------------------------------------------------------------------- validation


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft7Validator:
    text = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return jsonschema.Draft7Validator(json.loads(text))


def _json_path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validate_document(doc: dict) -> list[str]:
    """Errors against the official OpenLABEL 1.0.0 schema, then openlabel-checker's
    error-severity consistency checks; each names its JSON path. Empty list = valid.

    The consistency checks run only on schema-valid documents: they assume the schema's
    shape, and a schema-invalid document is already rejected.
    """
    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        return [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]
    out = []
    for check in DOC_CHECKERS:
        for issue in check(doc).issues:
            if issue.severity == Severity.ERROR:
                out.append(f"$.{issue.path or 'openlabel'}: [{issue.checker_id}] {issue.message}")
    return out


# ---------------------------------------------------------------------------- writing


def _intervals(indices: set[int] | list[int]) -> list[dict]:
    """Merge frame numbers into closed runs, as OpenLABEL frame_intervals."""
    runs: list[dict] = []
    for i in sorted(indices):
        if runs and runs[-1]["frame_end"] == i - 1:
            runs[-1]["frame_end"] = i
        else:
            runs.append({"frame_start": i, "frame_end": i})
    return runs


def _check_utc(value: str, where: str) -> None:
    try:
        offset = datetime.fromisoformat(value).utcoffset()
    except (TypeError, ValueError):
        offset = None
    if offset != timedelta(0):
        raise OpenLabelError("schema", f"{where}: reviewed_at {value!r} is not an ISO 8601 UTC time")


def _odd_data(odd: dict, ont: Ontology, where: str) -> dict:
    extra = sorted(set(odd) - set(ont.odd))
    if extra:
        raise OpenLabelError("unknown_class", f"{where}: ODD attribute(s) {extra} not in ontology {ont.uri}")
    text, boolean = [], []
    for name in sorted(ont.odd):
        if name not in odd:
            raise OpenLabelError("missing_field", f"{where}: ODD attribute {name!r} missing")
        val, allowed = odd[name], ont.odd[name]
        if val not in allowed or type(val) is not type(allowed[0]):
            raise OpenLabelError("unknown_class", f"{where}: ODD {name}={val!r} not in ontology values {list(allowed)}")
        (boolean if isinstance(val, bool) else text).append({"name": name, "val": val})
    data: dict = {}
    if text:
        data["text"] = text
    if boolean:
        data["boolean"] = boolean
    return data


def _box_entry(o: ObjectLabel, where: str) -> dict:
    try:
        x0, y0, x1, y1 = (float(v) for v in o.box)
    except (TypeError, ValueError):
        raise OpenLabelError("bad_box", f"{where}: box {o.box!r} is not 4 numbers (x0, y0, x1, y1)") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise OpenLabelError("bad_box", f"{where}: box {o.box!r} needs finite x0 < x1 and y0 < y1")
    c = o.confidence
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= c <= 1.0:
        raise OpenLabelError("schema", f"{where}: confidence {c!r} is not a number in [0, 1]")
    if o.source not in SOURCES:
        raise OpenLabelError("schema", f"{where}: source {o.source!r} is not one of {SOURCES}")
    text = [{"name": "source", "val": o.source}]
    if o.reviewer is not None:
        text.append({"name": "reviewer", "val": str(o.reviewer)})
    if o.reviewed_at is not None:
        _check_utc(o.reviewed_at, where)
        text.append({"name": "reviewed_at", "val": o.reviewed_at})
    return {
        "name": BOX_NAME,
        "val": [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0],
        "attributes": {"num": [{"name": "confidence", "val": float(c)}], "text": text},
    }


def _assign_uids(frames: list[FrameLabel]) -> list[list[str]]:
    """Keep given uids, number the rest 0, 1, ... in frame then object order (skipping
    taken ones), so the same input always gives the same document."""
    taken = {o.uid for f in frames for o in f.objects if o.uid is not None}
    for uid in taken:
        if not isinstance(uid, str) or not _UID.match(uid):
            raise OpenLabelError("schema", f"object uid {uid!r} is not an integer string or UUID (OpenLABEL uid)")
    counter = 0
    out = []
    for f in frames:
        uids = []
        for o in f.objects:
            uid = o.uid
            if uid is None:
                while str(counter) in taken:
                    counter += 1
                uid = str(counter)
                taken.add(uid)
            uids.append(uid)
        out.append(uids)
    return out


def drive_document(
    drive_id: str,
    vehicle_id: str,
    cohort: str,
    frames: list[FrameLabel],
    *,
    label_version: str,
    stream: str = "camera_front",
    annotator: str = "avops-teacher",
) -> dict:
    """One drive's labels as an OpenLABEL 1.0 document (encoding: see the module docstring).

    Rejects what a reader could not trust (unknown class or ODD value, bad box, missing
    ODD attribute, duplicate frame) instead of writing it; generated uids are
    deterministic so identical labels give identical bytes.
    """
    ont = load_ontology()
    frames = sorted(frames, key=lambda f: f.frame_index)
    seen: set[int] = set()
    for f in frames:
        if isinstance(f.frame_index, bool) or not isinstance(f.frame_index, int) or f.frame_index < 0:
            raise OpenLabelError("schema", f"frame_index {f.frame_index!r} is not a non-negative int")
        if f.frame_index in seen:
            raise OpenLabelError("schema", f"frame {f.frame_index} appears twice")
        seen.add(f.frame_index)

    objects: dict[str, dict] = {}
    obj_frames: dict[str, set[int]] = {}
    obj_attrs: dict[str, dict[str, str]] = {}
    out_frames: dict[str, dict] = {}
    for f, uids in zip(frames, _assign_uids(frames)):
        where = f"frame {f.frame_index}"
        if f.status not in STATUSES:
            raise OpenLabelError("schema", f"{where}: status {f.status!r} is not one of {STATUSES}")
        if not isinstance(f.image_sha256, str) or not _SHA256.match(f.image_sha256):
            raise OpenLabelError("missing_field", f"{where}: image_sha256 {f.image_sha256!r} is not a sha256 hex digest")
        ts = f.timestamp
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            raise OpenLabelError("schema", f"{where}: timestamp {ts!r} is not a finite number")
        frame_objects: dict[str, dict] = {}
        for o, uid in zip(f.objects, uids):
            owhere = f"{where} object {uid}"
            if o.cls not in ont.classes:
                raise OpenLabelError("unknown_class", f"{owhere}: class {o.cls!r} not in ontology {ont.uri}")
            if uid in frame_objects:
                raise OpenLabelError("schema", f"{owhere}: uid used twice in one frame")
            if uid in objects and objects[uid]["type"] != o.cls:
                raise OpenLabelError("schema", f"{owhere}: uid already has class {objects[uid]['type']!r}, not {o.cls!r}")
            entry = _box_entry(o, owhere)
            objects.setdefault(uid, {"name": f"{o.cls}-{uid}", "type": o.cls, "ontology_uid": ONTOLOGY_UID})
            obj_frames.setdefault(uid, set()).add(f.frame_index)
            attrs = obj_attrs.setdefault(uid, {})
            attrs.update({a["name"]: "num" for a in entry["attributes"]["num"]})
            attrs.update({a["name"]: "text" for a in entry["attributes"]["text"]})
            frame_objects[uid] = {"object_data": {"bbox": [entry]}}
        frame: dict = {
            "frame_properties": {
                "timestamp": ts,
                "streams": {stream: {"uri": f"sha256:{f.image_sha256}"}},
                "label_status": f.status,
                **({"incident_report": f.incident} if f.incident else {}),
            },
            "contexts": {ODD_CONTEXT_UID: {"context_data": _odd_data(f.odd, ont, where)}},
        }
        if frame_objects:
            frame["objects"] = frame_objects
        out_frames[str(f.frame_index)] = frame

    for uid, obj in objects.items():
        obj["frame_intervals"] = _intervals(obj_frames[uid])
        obj["object_data_pointers"] = {
            BOX_NAME: {
                "type": "bbox",
                "frame_intervals": _intervals(obj_frames[uid]),
                "attribute_pointers": dict(sorted(obj_attrs[uid].items())),
            }
        }

    ol: dict = {
        "metadata": {
            "schema_version": SCHEMA_VERSION,
            "name": drive_id,
            "annotator": annotator,
            "file_version": label_version,
            "comment": f"avops labels of drive {drive_id} (vehicle {vehicle_id}, cohort {cohort})",
            "drive_id": drive_id,
            "vehicle_id": vehicle_id,
            "cohort": cohort,
            "label_version": label_version,
        },
        "ontologies": {ONTOLOGY_UID: ont.uri},
        "streams": {stream: {"type": "camera", "description": f"{stream} of vehicle {vehicle_id}"}},
        "frame_intervals": _intervals(seen),
        "frames": out_frames,
    }
    if objects:
        ol["objects"] = objects
    if frames:
        ol["contexts"] = {
            ODD_CONTEXT_UID: {
                "name": "odd",
                "type": "odd",
                "ontology_uid": ONTOLOGY_UID,
                "frame_intervals": _intervals(seen),
                "context_data_pointers": {
                    name: {"type": "boolean" if isinstance(vals[0], bool) else "text", "frame_intervals": _intervals(seen)}
                    for name, vals in sorted(ont.odd.items())
                },
            }
        }
    return {"openlabel": ol}


# ---------------------------------------------------------------------------- reading


def _named(items: Any, name: str) -> Any:
    for it in items or []:
        if isinstance(it, dict) and it.get("name") == name:
            return it
    return None


def _uid_key(uid: str) -> tuple:
    return (0, int(uid), "") if re.fullmatch(r"-?[0-9]+", uid) else (1, 0, uid)


def _parse_object(uid: str, fo: dict, decl: dict, ont: Ontology, where: str) -> ObjectLabel:
    where = f"{where} object {uid}"
    cls = decl.get("type")
    if cls not in ont.classes:
        raise OpenLabelError("unknown_class", f"{where}: class {cls!r} not in ontology {ont.uri}")
    box = _named(fo.get("object_data", {}).get("bbox"), BOX_NAME)
    if box is None:
        raise OpenLabelError("missing_field", f"{where}: no bbox named {BOX_NAME!r}")
    xc, yc, w, h = box["val"]  # length and types guaranteed by the schema
    if not all(math.isfinite(v) for v in (xc, yc, w, h)) or w <= 0 or h <= 0:
        raise OpenLabelError("bad_box", f"{where}: bbox {box['val']} needs positive finite width and height")
    attrs = box.get("attributes", {})
    conf = _named(attrs.get("num"), "confidence")
    source = _named(attrs.get("text"), "source")
    if conf is None or source is None:
        raise OpenLabelError("missing_field", f"{where}: bbox attributes need num 'confidence' and text 'source'")
    reviewer = _named(attrs.get("text"), "reviewer")
    reviewed_at = _named(attrs.get("text"), "reviewed_at")
    r = _BOX_DECIMALS
    return ObjectLabel(
        box=(round(xc - w / 2, r), round(yc - h / 2, r), round(xc + w / 2, r), round(yc + h / 2, r)),
        cls=cls,
        confidence=float(conf["val"]),
        source=source["val"],
        uid=uid,
        reviewer=reviewer["val"] if reviewer else None,
        reviewed_at=reviewed_at["val"] if reviewed_at else None,
    )


def _parse_odd(frame: dict, odd_uid: str | None, ont: Ontology, where: str) -> dict:
    data = frame.get("contexts", {}).get(odd_uid, {}).get("context_data") if odd_uid is not None else None
    if data is None:
        raise OpenLabelError("missing_field", f"{where}: no ODD context data")
    odd = {}
    for name, allowed in sorted(ont.odd.items()):
        item = _named(data.get("boolean" if isinstance(allowed[0], bool) else "text"), name)
        if item is None:
            raise OpenLabelError("missing_field", f"{where}: ODD attribute {name!r} missing")
        if item["val"] not in allowed:
            raise OpenLabelError("unknown_class", f"{where}: ODD {name}={item['val']!r} not in ontology values {list(allowed)}")
        odd[name] = item["val"]
    return odd


def parse_document(doc: dict, ontology: Ontology | None = None) -> tuple[dict, list[FrameLabel]]:
    """Inverse of :func:`drive_document`: (drive info, frames sorted by index, objects by uid).

    Validates against the official schema first, so everything after can rely on the
    schema's shapes; then checks what the schema cannot know (ontology classes and ODD
    values, box sizes, our required fields).
    """
    ont = ontology or load_ontology()
    errors = [f"{_json_path(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(doc)]
    if errors:
        raise OpenLabelError("schema", "; ".join(sorted(errors)[:10]) + (f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""))
    ol = doc["openlabel"]
    meta = ol["metadata"]
    info = {}
    for key in ("drive_id", "vehicle_id", "cohort", "label_version"):
        if not isinstance(meta.get(key), str):
            raise OpenLabelError("missing_field", f"metadata.{key} missing or not a string")
        info[key] = meta[key]

    ontologies = ol.get("ontologies", {})
    uris = {k: (v if isinstance(v, str) else v["uri"]) for k, v in ontologies.items()}
    ours = {k for k, u in uris.items() if u == ont.uri}
    if not ours:
        raise OpenLabelError("unknown_class", f"document ontologies {sorted(uris.values())} do not include {ont.uri}")

    cameras = sorted(k for k, s in ol.get("streams", {}).items() if s.get("type") == "camera")
    if len(cameras) != 1:
        raise OpenLabelError("missing_field", f"expected exactly one camera stream, found {cameras}")
    stream = cameras[0]
    odd_uids = sorted(k for k, c in ol.get("contexts", {}).items() if c.get("type") == "odd")
    odd_uid = odd_uids[0] if odd_uids else None
    declared = ol.get("objects", {})

    frames = []
    for key in sorted(ol.get("frames", {}), key=int):
        frame = ol["frames"][key]
        where = f"frame {key}"
        props = frame.get("frame_properties", {})
        ts = props.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise OpenLabelError("missing_field", f"{where}: frame_properties.timestamp missing or not a number")
        uri = props.get("streams", {}).get(stream, {}).get("uri", "")
        digest = uri.removeprefix("sha256:")
        if not uri.startswith("sha256:") or not _SHA256.match(digest):
            raise OpenLabelError("missing_field", f"{where}: stream {stream!r} has no 'sha256:<hex>' uri (got {uri!r})")
        status = props.get("label_status", "labeled")
        if status not in STATUSES:
            raise OpenLabelError("schema", f"{where}: label_status {status!r} is not one of {STATUSES}")
        objects = []
        for uid in sorted(frame.get("objects", {}), key=_uid_key):
            if uid not in declared:
                raise OpenLabelError("missing_field", f"{where}: object {uid} is not declared in openlabel.objects")
            ouid = declared[uid].get("ontology_uid")
            if ouid is not None and ouid not in ours:
                raise OpenLabelError("unknown_class", f"{where} object {uid}: class from another ontology {uris.get(ouid)!r}")
            objects.append(_parse_object(uid, frame["objects"][uid], declared[uid], ont, where))
        incident = props.get("incident_report")
        if incident is not None and (not isinstance(incident, str) or not incident.strip()):
            raise OpenLabelError("schema", f"{where}: incident_report must be a non-empty text")
        frames.append(FrameLabel(int(key), ts, digest, _parse_odd(frame, odd_uid, ont, where), objects, status, incident))
    return info, frames


# ---------------------------------------------------------------------------- files


def load_document(path: Path) -> dict:
    """Read a document; a corrupt file becomes OpenLabelError("schema") naming the file,
    so callers can quarantine it instead of crashing on a JSONDecodeError."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OpenLabelError("schema", f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise OpenLabelError("schema", f"{path}: top level is {type(doc).__name__}, not an object")
    return doc


def document_bytes(doc: dict, where: str = "document") -> bytes:
    """The one serialization of a document (sorted keys, compact, trailing newline), so the
    same labels always have the same content address wherever they are stored."""
    try:
        return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n").encode()
    except ValueError as exc:  # NaN/inf are not JSON
        raise OpenLabelError("schema", f"{where}: {exc}") from exc


def write_document(path: Path, doc: dict) -> str:
    """Atomically write a valid document as ``document_bytes`` and return their sha256.
    Invalid documents are refused rather than written."""
    errors = validate_document(doc)
    if errors:
        raise OpenLabelError("schema", f"{path}: refusing to write an invalid document: " + "; ".join(errors[:10]))
    data = document_bytes(doc, str(path))
    atomic_write_bytes(path, data)
    return sha256_bytes(data)
