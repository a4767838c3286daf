"""Manufacturing QC: AOI shifts, the inspection model and its gates, the line-change and false-alarm sensors."""

import json
import shutil

import dagster as dg
import numpy as np
import pytest
import yaml

from avops.fleet.plant import DEFECTS, render_part, simulate_shift
from avops.fleet_registry import RegistryError, project_root
from avops.home import HomeLayout
from avops.manufacturing import model as aoi
from avops.manufacturing import pipeline
from avops.manufacturing.data import publish, read_line
from avops.manufacturing.lines import config_changes, load_lines
from avops.manufacturing.monitor import false_alarm_rate
from avops.registry import ModelRegistry
from avops.store import ObjectStore
from avops_assets.definitions import defs
from avops_assets.jobs import INSPECTION_JOB
from avops_assets.partitions import LINES
from resources import AvopsHome, LineRegistryResource, ModelRegistryResource
from sensors.lines import fp_rate_sensor, line_change_sensor

A, B = "leipzig-body-l1", "wolfsburg-body-l3"
MOVED = {"x_px": 0, "y_px": 6, "angle_deg": 12}


def _lines_yaml(root):
    raw = yaml.safe_load((project_root() / "config" / "lines.yaml").read_text())
    raw["lines"] = [dict(l, gates={"defect_recall_min_lb": 0.3, "false_alarm_max_ub": 0.3, "min_defects": 5, "min_good": 30})
                    for l in raw["lines"] if l["id"] in (A, B)]
    (root / "lines.yaml").write_text(yaml.safe_dump(raw))
    return root / "lines.yaml"


@pytest.fixture(scope="module")
def _plant(tmp_path_factory):
    """Two lines, one fully audited ramp-up shift each, a deployed inspection model each."""
    root = tmp_path_factory.mktemp("plant")
    reg = load_lines(_lines_yaml(root))
    home = HomeLayout(root / "home")
    store, registry = ObjectStore(home.objects), ModelRegistry.local(home)
    for line in reg.lines:
        simulate_shift(home, line, 0, reg.simulation, ramp_up=True)
        publish(home, store, line.id, read_line(home, line.id, store))
        r = pipeline.train_line(home, registry, line, "test")
        assert r.version.stage == "released", r.gates
    return root


@pytest.fixture()
def plant(_plant, tmp_path):
    root = tmp_path / "plant"
    shutil.copytree(_plant, root)
    return {"root": root, "home": HomeLayout(root / "home"), "lines": load_lines(root / "lines.yaml"), "path": root / "lines.yaml"}


def test_line_registry_errors_name_the_file_and_the_problem(tmp_path):
    raw = yaml.safe_load((project_root() / "config" / "lines.yaml").read_text())
    raw["lines"][0]["id"] = "leipzig/l1"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(RegistryError, match=r"bad.yaml: lines\[0\].*may not contain"):
        load_lines(tmp_path / "bad.yaml")
    raw["lines"][0]["id"], raw["lines"][0]["defect"] = "leipzig-l1", "dent"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="defect must be weld or surface"):
        load_lines(tmp_path / "bad.yaml")
    assert config_changes({"part_variant": "a", "camera": {"y_px": 0}, "lighting": {}},
                          {"part_variant": "b", "camera": {"y_px": 6}, "lighting": {}}) == ["part_variant: a -> b", "camera.y_px: 0 -> 6"]


def _batch(rng, line, config, n):
    ys = [str(rng.choice(DEFECTS[line.defect])) if rng.random() < 0.2 else None for _ in range(n)]
    return np.stack([render_part(rng, line, config, 32, y) for y in ys]), np.array([y is not None for y in ys], int)


def test_the_aoi_model_finds_defects_and_the_gates_block_one_that_does_not():
    line = load_lines().line(A)
    rng = np.random.default_rng(3)
    X, y = _batch(rng, line, line.config(), 300)
    Xt, yt = _batch(rng, line, line.config(), 500)
    good = aoi.evaluate(aoi.predict(aoi.train(X, y), Xt), yt)
    assert good.recall > 0.6 and good.false_alarm_rate < 0.05, good
    assert all(g["status"] == "passed" for g in aoi.judge(good, line.gates))
    shuffled = aoi.train(X, rng.permutation(y))  # labels that carry nothing
    bad = aoi.evaluate(aoi.predict(shuffled, Xt), yt)
    assert any(g["blocks"] for g in aoi.judge(bad, line.gates))
    assert aoi.to_bytes(aoi.train(X, y, seed=5)) == aoi.to_bytes(aoi.train(X, y, seed=5)), "deterministic for a seed"


def test_a_broken_shift_and_a_tampered_image_are_quarantined_and_nothing_else_is_lost(plant):
    home, line = plant["home"], plant["lines"].line(A)
    for i in (1, 2):
        simulate_shift(home, line, i, plant["lines"].simulation)
    s1, s2 = (home.plant / "aoi" / A / f"{A}-s{i:04d}" for i in (1, 2))
    (s1 / "shift.json").write_text("{not json")
    image = next((s2 / "images").iterdir())
    image.write_bytes(image.read_bytes()[:-10] + b"0" * 10)
    data = read_line(home, A, ObjectStore(home.objects))
    assert sorted(data.parts["shift_id"].unique()) == [f"{A}-s0000", f"{A}-s0002"]
    assert len(data.parts[data.parts["shift_id"] == f"{A}-s0002"]) == 399
    reasons = " | ".join(q["reason"] for q in data.quarantined)
    assert "shift.json unreadable" in reasons and "does not match its recorded sha256" in reasons
    assert (home.quarantine / "plant" / A / s1.name).is_dir() and not s1.exists()


def _tick(sensor, plant, instance, cursor=None):
    resources = {"avops_home": AvopsHome(root=str(plant["home"].root)), "lines": LineRegistryResource(path=str(plant["path"])),
                 "model_registry": ModelRegistryResource(home=str(plant["home"].root))}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        return sensor(ctx)


def test_line_change_sensor_retrains_the_changed_line_only(plant, monkeypatch):
    home, reg = plant["home"], plant["lines"]
    monkeypatch.setenv("AVOPS_HOME", str(home.root))
    registry = ModelRegistry.local(home)
    instance = dg.DagsterInstance.ephemeral()
    first = _tick(line_change_sensor, plant, instance)
    assert not first.run_requests and first.dynamic_partitions_requests, "lines registered as partitions, nothing changed"
    instance.add_dynamic_partitions(LINES, reg.line_ids)
    for line in reg.lines:  # the next shift: line A's camera was remounted, line B runs as before
        inspect, version = pipeline.inspector(home, registry, line.id)
        config = dict(line.config(), camera=MOVED) if line.id == A else None
        simulate_shift(home, line, 1, reg.simulation, config=config, inspector=inspect, inspector_version=version, ramp_up=line.id == A)
    second = _tick(line_change_sensor, plant, instance, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [A]
    req = second.run_requests[0]
    assert req.tags["avops/trigger"] == "line_change" and "camera.y_px: 0 -> 6" in req.tags["avops/reason"]
    assert not _tick(line_change_sensor, plant, instance, second.cursor).run_requests, "once per change"
    result = defs().resolve_job_def(INSPECTION_JOB).execute_in_process(
        partition_key=A, instance=instance, tags=req.tags, raise_on_error=False,
        resources={"avops_home": AvopsHome(root=str(home.root)), "lines": LineRegistryResource(path=str(plant["path"])),
                   "model_registry": ModelRegistryResource(home=str(plant["home"].root))})
    md = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    model_md = md["manufacturing/inspection_models"]
    assert model_md["trigger"].value == "line_change" and "camera.y_px: 0 -> 6" in model_md["config_changes"].value
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "inspection_gates"
    if check.passed:
        assert pipeline.production(registry, A).lineage["line_config"]["camera"] == MOVED


def test_fp_rate_sensor_retrains_the_line_whose_false_alarms_rise(plant):
    home, reg = plant["home"], plant["lines"]
    registry = ModelRegistry.local(home)
    instance = dg.DagsterInstance.ephemeral()
    for line in reg.lines:  # line A's light diffuser cracked: a hot spot on every image, not a reported change
        inspect, version = pipeline.inspector(home, registry, line.id)
        aged = {"lighting": {"kind": "hotspot", "intensity": 1.0}} if line.id == A else None
        simulate_shift(home, line, 1, reg.simulation, inspector=inspect, inspector_version=version, condition=aged)
    fa = {line.id: false_alarm_rate(home, line.id, pipeline.production(registry, line.id).version, line.fp_window_parts) for line in reg.lines}
    assert fa[A].rate > reg.line(A).fp_rate_max and fa[A].flagged >= reg.line(A).fp_window_parts
    assert fa[B].rate <= reg.line(B).fp_rate_max
    result = _tick(fp_rate_sensor, plant, instance)
    assert [r.partition_key for r in result.run_requests] == [A], result.skip_reason
    assert result.run_requests[0].tags["avops/trigger"] == "fp_rate" and "overturned" in result.run_requests[0].tags["avops/reason"]
    assert not _tick(line_change_sensor, plant, instance).run_requests, "the line reported no configuration change"
    again = _tick(fp_rate_sensor, plant, instance, json.dumps({**json.loads(result.cursor), A: {**json.loads(result.cursor)[A], "files": ""}}))
    assert not again.run_requests and "cooling down" in again.skip_reason.skip_message
