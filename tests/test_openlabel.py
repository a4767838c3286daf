"""OpenLABEL 1.0 labels: round trip, official-schema validity, and the failures callers route on."""

import copy
import json

import pytest

from avops.curation.ontology import load_ontology
from avops.curation.openlabel import (
    FrameLabel,
    ObjectLabel,
    OpenLabelError,
    drive_document,
    load_document,
    parse_document,
    validate_document,
    write_document,
)

SHA = "ab" * 32
DAY = {"illumination": "day", "weather": "clear", "road_type": "urban", "roadworks": False}
NIGHT = {"illumination": "night", "weather": "rain", "road_type": "motorway", "roadworks": True}


def _frames() -> list[FrameLabel]:
    return [
        FrameLabel(
            0, 1_700_000_000.05, SHA, dict(DAY),
            [
                ObjectLabel((10.0, 20.0, 110.5, 220.25), "car", 0.91, "auto", uid="0"),
                ObjectLabel((0.1, 0.3, 12.7, 40.9), "pedestrian", 0.42, "auto", uid="1"),
            ],
            status="to_review",
        ),
        FrameLabel(
            1, 1_700_000_000.15, "cd" * 32, dict(NIGHT),
            [
                ObjectLabel((10.0, 21.0, 111.0, 221.0), "car", 1.0, "review", uid="0",
                            reviewer="alice", reviewed_at="2024-05-01T12:00:00Z"),
                ObjectLabel((300.0, 40.0, 320.0, 80.0), "traffic_cone", 1.0, "review", uid="2",
                            reviewer="alice", reviewed_at="2024-05-01T12:00:00Z"),
            ],
            status="reviewed",
        ),
        FrameLabel(5, 1_700_000_000.55, "ef" * 32, dict(DAY), [], status="labeled"),
    ]


def _doc(frames=None) -> dict:
    return drive_document("drive-001", "veh-7", "orin-my2024-eu", _frames() if frames is None else frames,
                          label_version="teacher-v3")


def test_round_trip_through_a_file_keeps_frames_review_fields_and_odd(tmp_path):
    path = tmp_path / "drive-001.openlabel.json"
    write_document(path, _doc())
    info, frames = parse_document(load_document(path))
    assert info == {"drive_id": "drive-001", "vehicle_id": "veh-7", "cohort": "orin-my2024-eu", "label_version": "teacher-v3"}
    assert frames == _frames()


def test_document_uses_openlabel_structures():
    ol = _doc()["openlabel"]
    assert ol["metadata"]["schema_version"] == "1.0.0"
    assert ol["ontologies"] == {"0": load_ontology().uri}
    assert ol["streams"]["camera_front"]["type"] == "camera"
    f0 = ol["frames"]["0"]
    assert f0["frame_properties"]["streams"]["camera_front"]["uri"] == f"sha256:{SHA}"
    box = f0["objects"]["0"]["object_data"]["bbox"][0]
    assert box["name"] == "box2d" and box["val"] == [60.25, 120.125, 100.5, 200.25]
    assert ol["objects"]["0"]["frame_intervals"] == [{"frame_start": 0, "frame_end": 1}]
    assert ol["frame_intervals"] == [{"frame_start": 0, "frame_end": 1}, {"frame_start": 5, "frame_end": 5}]


def test_generated_uids_are_stable_and_reparse_is_a_fixed_point():
    frames = _frames()
    for f in frames:
        for o in f.objects:
            o.uid = None
    doc = _doc(frames)
    _, parsed = parse_document(doc)
    assert [[o.uid for o in f.objects] for f in parsed] == [["0", "1"], ["2", "3"], []]
    assert parse_document(_doc(parsed))[1] == parsed


def test_written_document_is_valid_against_the_official_schema_and_checks():
    assert validate_document(_doc()) == []
    assert validate_document(_doc([])) == []


@pytest.mark.parametrize(
    "breakage, path_fragment",
    [
        (lambda d: d["openlabel"]["frames"]["0"]["objects"]["0"]["object_data"]["bbox"][0]["val"].pop(), "bbox[0].val"),
        (lambda d: d.pop("openlabel"), "$"),
        (lambda d: d["openlabel"]["frames"]["0"]["frame_properties"].update(timestamp=[1]), "frame_properties.timestamp"),
        (lambda d: d["openlabel"]["metadata"].update(schema_version="0.9"), "metadata.schema_version"),
        (lambda d: d["openlabel"]["objects"]["0"].pop("type"), "objects.0"),
    ],
)
def test_broken_documents_yield_errors_naming_the_path(breakage, path_fragment):
    doc = _doc()
    breakage(doc)
    errors = validate_document(doc)
    assert errors and any(path_fragment in e for e in errors), errors
    with pytest.raises(OpenLabelError) as exc:
        parse_document(doc)
    assert exc.value.reason == "schema"


def test_consistency_checks_catch_what_the_schema_allows():
    doc = _doc()
    doc["openlabel"]["frames"]["0"]["objects"]["99"] = copy.deepcopy(doc["openlabel"]["frames"]["0"]["objects"]["0"])
    assert any("objects.99" in e and "check_element_references" in e for e in validate_document(doc))


def test_unknown_class_is_refused_on_write_and_on_read():
    frames = _frames()
    frames[1].objects[0].cls = "unicorn"
    with pytest.raises(OpenLabelError) as exc:
        _doc(frames)
    assert exc.value.reason == "unknown_class" and "unicorn" in exc.value.detail and "frame 1" in exc.value.detail

    doc = _doc()
    doc["openlabel"]["objects"]["2"]["type"] = "unicorn"
    with pytest.raises(OpenLabelError) as exc:
        parse_document(doc)
    assert exc.value.reason == "unknown_class" and "unicorn" in exc.value.detail and "frame 1" in exc.value.detail


def test_bad_box_and_missing_fields():
    frames = _frames()
    frames[0].objects[0].box = (50.0, 20.0, 10.0, 220.0)  # x1 < x0
    with pytest.raises(OpenLabelError) as exc:
        _doc(frames)
    assert exc.value.reason == "bad_box"

    doc = _doc()
    doc["openlabel"]["frames"]["0"]["objects"]["0"]["object_data"]["bbox"][0]["val"][2] = -5.0
    with pytest.raises(OpenLabelError) as exc:
        parse_document(doc)
    assert exc.value.reason == "bad_box"

    doc = _doc()
    doc["openlabel"]["metadata"].pop("cohort")
    with pytest.raises(OpenLabelError) as exc:
        parse_document(doc)
    assert exc.value.reason == "missing_field" and "cohort" in exc.value.detail

    frames = _frames()
    frames[2].odd.pop("weather")
    with pytest.raises(OpenLabelError) as exc:
        _doc(frames)
    assert exc.value.reason == "missing_field" and "weather" in exc.value.detail


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "truncated.openlabel.json"
    path.write_bytes(json.dumps(_doc()).encode()[:-40])
    with pytest.raises(OpenLabelError) as exc:
        load_document(path)
    assert exc.value.reason == "schema" and "truncated.openlabel.json" in str(exc.value)


def test_bytes_are_deterministic_and_invalid_documents_are_not_written(tmp_path):
    a = write_document(tmp_path / "a.json", _doc())
    b = write_document(tmp_path / "b.json", _doc(list(reversed(_frames()))))
    assert a == b and (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()

    bad = _doc()
    del bad["openlabel"]["metadata"]
    with pytest.raises(OpenLabelError) as exc:
        write_document(tmp_path / "bad.json", bad)
    assert exc.value.reason == "schema" and not (tmp_path / "bad.json").exists()
