"""Training, safety gates, incident replay and shadow mode on a small simulated cohort with reviewed labels.

The curated set here is built from the simulator's ground truth (tests may read it) and
committed to a real embedded dataset repository, so the Dagster assets run unchanged.
The planted fault: the same set with the night frames removed from the train split.
"""


import dagster as dg
import pytest

from avops.curation import openlabel
from avops.curation.pipeline import load_frames
from avops.curation.reviews import returns_dir
from avops.registry import ModelRegistry
from avops.store import ObjectStore
from avops.training import incidents as inc_lib
from avops.training import pipeline
from avops.training.checkpoints import TrainConfig, load_train_config, train_checkpoint
from avops.training.data import load_training_set
from avops.training.gates import load_gate_policy

from tests.conftest import GOLD_COHORT as COHORT
CLASSES = ("car", "truck", "pedestrian", "cyclist", "traffic_cone")
FAST = TrainConfig(epochs=20, class_score_thresholds={"pedestrian": 0.1, "cyclist": 0.1})


@pytest.fixture()
def env(gold, monkeypatch, tmp_path):
    monkeypatch.setenv("AVOPS_HOME", str(gold["home"].root))
    monkeypatch.setenv("AVOPS_SAFETY_GATES", str(gold["root"] / "gates.yaml"))
    monkeypatch.setenv("AVOPS_TRAINING_CONFIG", str(gold["root"] / "training.yaml"))
    monkeypatch.setenv("AVOPS_FLEET_REGISTRY", str(gold["registry_path"]))
    return gold


def test_training_is_deterministic_for_a_seed(gold):
    store = ObjectStore(gold["home"].objects)
    data = load_training_set(gold["repo"], gold["clean"], COHORT)
    small = data.without({"illumination": "day"})  # a quick subset
    cfg = TrainConfig(epochs=2)
    a = train_checkpoint(store, small, CLASSES, cfg)
    b = train_checkpoint(store, small, CLASSES, cfg)
    c = train_checkpoint(store, small, CLASSES, TrainConfig(epochs=2, seed=1))
    assert a.digest == b.digest, "same data, config and seed: same checkpoint digest"
    assert c.digest != a.digest, "another seed: another checkpoint"
    prov = store.get_json(a.provenance_digest)
    assert prov["dataset"]["commit_id"] == gold["clean"] and prov["weights_sha256"] == a.digest
    assert prov["hyperparameters"]["seed"] == 0 and prov["libraries"]["torch"] and prov["code"]["git_sha"]
    assert set(prov["dataset"]["files_read"]) == {f"cohorts/{COHORT}/{n}" for n in ("samples.parquet", "labels.parquet", "manifest.json")}


def test_training_config_rejects_unknown_keys(tmp_path):
    (tmp_path / "t.yaml").write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_train_config(tmp_path / "t.yaml")


def _report_release(instance, commit: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        dg.AssetKey(["curation", "released_sets"]), partition=COHORT, metadata={"dataset_version": commit}))


def _run_training(instance):
    from avops_assets.definitions import MAIN_JOB, defs

    keys = [dg.AssetKey(["training", n]) for n in ("checkpoints", "incident_library", "evaluation", "validated_models", "shadow")]
    job = defs().resolve_job_def(MAIN_JOB)
    return job.execute_in_process(partition_key=COHORT, instance=instance, asset_selection=keys, raise_on_error=False)


def test_gates_block_a_planted_fault_and_pass_the_clean_set(env, tmp_path):
    """The proof the gates work: night removed from training -> the night gate blocks; the clean set passes."""
    from avops_assets.partitions import COHORTS

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [COHORT])
    reg = ModelRegistry.local(env["home"])

    _report_release(instance, env["planted"])
    planted = _run_training(instance)
    assert not planted.success
    evals = {e.check_name: e for e in planted.get_asset_check_evaluations()}
    assert not evals["gate_night"].passed, "the night gate blocks the model trained without night frames"
    assert evals["gate_night"].metadata["gate"].value == "night"
    assert evals["gate_night"].metadata["samples"].value >= 10
    done = {e.asset_key.path[-1] for e in planted.get_asset_materialization_events()}
    assert "validated_models" not in done, "nothing downstream of a failed gate materializes"
    _, evidence = pipeline.current_evaluation(env["home"], COHORT)
    assert evidence["blocked"] and any(g["gate"] == "night" and g["blocks"] for g in evidence["gates"])
    blocked = reg.get(pipeline.MODEL, evidence["candidate"]["version"])
    assert blocked.stage == "blocked" and "night" in reg.history(pipeline.MODEL, blocked.version)[-1].reason
    assert blocked.lineage["dataset_commit"] == env["planted"]

    _report_release(instance, env["clean"])
    clean = _run_training(instance)
    evals = {e.check_name: e for e in clean.get_asset_check_evaluations()}
    assert clean.success, {k: e.metadata.get("reason") for k, e in evals.items() if not e.passed}
    assert evals["gate_night"].passed and evals["gate_overall"].passed
    done = {e.asset_key.path[-1] for e in clean.get_asset_materialization_events()}
    assert {"checkpoints", "evaluation", "validated_models"} <= done
    _, evidence = pipeline.current_evaluation(env["home"], COHORT)
    good = reg.get(pipeline.MODEL, evidence["candidate"]["version"])
    assert good.stage == "validated" and good.lineage["dataset_commit"] == env["clean"]
    stages = [(e.from_value, e.to_value) for e in reg.history(pipeline.MODEL, good.version) if e.kind == "stage"]
    assert stages == [("candidate", "validated")]


def test_incident_regression_blocks_and_shadow_feeds_selection(env):
    """Production handles an incident the candidate misses: promotion is blocked, whatever the slice gates say."""
    home, repo = env["home"], env["repo"]
    store = ObjectStore(home.objects)
    reg = ModelRegistry(f"sqlite:///{home.root / 'incident-test-registry.sqlite'}")
    lenient = load_gate_policy(env["root"] / "gates.yaml")
    lenient = type(lenient)(lenient.bound, lenient.confidence, tuple(
        type(g)(g.slice, g.metric, 0.0, 0, 1.0, "warn") for g in lenient.gates), lenient.path, lenient.iou)
    cfg = load_train_config()
    prod = pipeline.train(home, repo, reg, COHORT, env["clean"], cfg, "test")
    pipeline.validate(reg, prod.version.version, "0" * 64, "test")
    pipeline.release(reg, COHORT, prod.version.version, "test", "production for the incident test")

    # An incident the production model handles: test-split night frames where it finds the VRU or vehicle.
    data = load_training_set(repo, env["clean"], COHORT)
    test = data.split("test")
    night = test[test["illumination"] == "night"]
    from avops.training.evaluation import predict
    from avops.training.slices import match_objects

    targets = data.targets(night)
    dets = predict(prod.checkpoint.model, store, list(night["object_sha256"]))
    gt, _ = match_objects([d.boxes for d in dets], [list(d.classes) for d in dets], [d.scores for d in dets],
                          [t["boxes"] for t in targets], [t["classes"] for t in targets], iou=0.5)
    hit_frames = sorted(set(gt.loc[gt["matched"], "frame"]))[:3]
    assert hit_frames, "production detects something at night"
    frames = []
    for i in hit_frames:
        r, t = night.iloc[i], targets[i]
        frames.append(inc_lib.IncidentFrame(int(r.frame_index), float(r.timestamp), r.object_sha256, t["boxes"].tolist(), list(t["classes"])))
    inc = inc_lib.Incident(inc_lib.incident_id(night.iloc[hit_frames[0]].drive_id, [f.frame_index for f in frames]), COHORT,
                           night.iloc[hit_frames[0]].drive_id, "planted: night scene production handles", {"illumination": "night",
                           "weather": str(night.iloc[hit_frames[0]].weather), "road_type": "urban", "roadworks": False},
                           sorted(set(frames[0].classes)), frames, {"reported_by": "test"}, min_recall=0.3, image_size=(96, 96))
    added, is_new = inc_lib.add_incident(home, store, inc)
    assert is_new and not inc_lib.validate_scenario((inc_lib.library_dir(home) / inc.id / "scenario.xosc").read_bytes())

    cand = pipeline.train(home, repo, reg, COHORT, env["planted"], cfg, "test")
    report = pipeline.evaluate(home, repo, reg, COHORT, cand.version.version, lenient, "test")
    assert inc.id in report.regressions, report.replay
    assert report.blocked and not report.blocking, "blocked by the incident replay alone, not by a slice gate"
    assert reg.get(pipeline.MODEL, cand.version.version).stage == "blocked"
    assert "regressed" in reg.history(pipeline.MODEL, cand.version.version)[-1].reason

    # shadow mode: the planted candidate beside production on recent drives; the frames feed selection
    sh = pipeline.shadow(home, reg, COHORT, cand.version.version, lenient.slices)
    assert sh.manifest is not None and len(sh.frames) > 0 and sh.frames["shadow_disagreement"].between(0, 1).all()
    signal = pipeline.shadow_signal(home, COHORT)
    assert len(signal) == len(sh.frames)
    from avops.curation.selection import informativeness

    f = signal.assign(uncertainty=0.0, disagreement=0.0)
    scores = informativeness(f)
    assert (scores[f["shadow_disagreement"] > 0] > 0).all(), "frames the two models disagree on rank above agreement"


def test_incident_scenarios_are_valid_openscenario_and_harvested_from_reviews(gold, tmp_path):
    home = gold["home"]
    frames, _ = load_frames(home, COHORT)
    row = frames.iloc[0]
    doc = openlabel.drive_document(row.drive_id, row.vehicle_id, COHORT, [openlabel.FrameLabel(
        int(row.frame_index), float(row.timestamp), row.object_sha256,
        {"illumination": row.illumination, "weather": row.weather, "road_type": row.road_type, "roadworks": bool(row.roadworks)},
        [openlabel.ObjectLabel((40.0, 50.0, 44.0, 62.0), "pedestrian", 1.0, "review", reviewer="alice", reviewed_at="2026-11-26T00:00:00Z")],
        status="reviewed", incident="pedestrian missed at a crossing")], label_version="review", annotator="alice")
    openlabel.write_document(returns_dir(home, COHORT) / "incident-case.json", doc)
    new, size = pipeline.harvest_incidents(home, COHORT)
    assert len(new) == 1 and size >= 1
    inc = new[0]
    assert inc.description == "pedestrian missed at a crossing" and inc.critical_classes == ["pedestrian"]
    assert inc.source["reported_by"] == "alice"
    xml = (inc_lib.library_dir(home) / inc.id / "scenario.xosc").read_bytes()
    assert inc_lib.validate_scenario(xml) == []
    assert b"<Pedestrian" in xml and b"pedestrian_0" in xml
    again, _ = pipeline.harvest_incidents(home, COHORT)
    assert again == [], "the library does not grow twice from the same review"
    broken = xml.replace(b"<Entities>", b"<Entitys>").replace(b"</Entities>", b"</Entitys>")
    assert inc_lib.validate_scenario(broken), "the XSD catches a malformed scenario"
    (inc_lib.library_dir(home) / inc.id / "scenario.xosc").write_bytes(broken)
    with pytest.raises(ValueError, match="digest"):
        inc_lib.load_library(home)
    (inc_lib.library_dir(home) / inc.id / "scenario.xosc").write_bytes(xml)
