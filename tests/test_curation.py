"""The data loop end to end on a small simulated cohort: teacher, labels, review, curated set, campaign."""

import json
import shutil

import pytest
import yaml

from avops.curation import openlabel, pipeline
from avops.curation.campaigns import Campaign
from avops.curation.ontology import load_ontology
from avops.curation.policy import load_policy
from avops.curation.reviewer_sim import answer_tasks
from avops.curation.reviews import collect_returns, export_task, returns_dir
from avops.fleet.simulator import simulate_fleet
from avops.home import HomeLayout
from avops.ingest.ingest import ingest_partition
from avops.fleet_registry import load_registry, project_root
from avops.store import ObjectStore
from tests.conftest import TINY_FLEET

COHORT = "orin-my2024-eu"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One MCAP-only cohort, 3 vehicles x 2 drives x 40 s at 4 Hz (960 frames), and a fast policy."""
    root = tmp_path_factory.mktemp("small")
    fleet = json.loads(json.dumps(TINY_FLEET))
    fleet["cohorts"] = [dict(fleet["cohorts"][0], vehicle_count=3, loggers=["mcap"])]
    fleet["simulation"]["profiles"]["small"] = dict(fleet["simulation"]["profiles"]["tiny"], drives_per_vehicle=2, drive_seconds=40, camera_hz=4)
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    raw = yaml.safe_load((project_root() / "config" / "curation.yaml").read_text())
    raw["teacher"].update(seed_frames=400, heldout_frames=80, members=2, epochs=20, width=16)
    raw["selection"].update(budget_frames=100, review_budget_frames=20)
    (root / "curation.yaml").write_text(yaml.safe_dump(raw))
    registry = load_registry(root / "fleet.yaml")
    home = HomeLayout(root / "home")
    simulate_fleet(registry, home, profile="small")
    ingest_partition(home, registry.cohort(COHORT))
    policy = load_policy(str(root / "curation.yaml"))
    return {"home": home, "registry": registry, "policy": policy, "root": root}


def _repo(home):
    from avops.versioning.factory import open_repository

    return open_repository("embedded", "curated-sets", home=home)


def _review(home):
    return lambda: answer_tasks(home, COHORT)


def test_data_loop(small):
    home, policy, registry = small["home"], small["policy"], small["registry"]
    t = pipeline.build_teacher(home, COHORT, policy, _review(home))
    # the teacher beats a trivial prior-box baseline on held-out reviewed drives (labels from ground truth)
    assert t.heldout_metrics["f1"] > t.baseline_metrics["f1"] + 0.1, (t.heldout_metrics, t.baseline_metrics)
    assert t.seed_frames >= 300

    labels = pipeline.auto_label(home, COHORT, t.digest)
    store = ObjectStore(home.objects)
    for digest in labels.documents.values():
        assert openlabel.validate_document(json.loads(store.get_bytes(digest))) == []
    assert labels.frames_per_second > 0

    q = pipeline.queue_reviews(home, COHORT, policy, _review(home))
    assert q.selected == 100 and q.tasks_exported >= 1
    sel = pipeline.datasets.read_table(ObjectStore(home.objects), q.manifest, "selection").to_pandas()
    gold_test = sel["reasons"].str.contains("gold:test_split")
    assert (sel.loc[sel["review"] & ~gold_test].shape[0]) <= 20, "uncertain frames for review stay within the review budget"

    repo = _repo(home)
    cs = pipeline.build_curated_set(home, COHORT, policy, repo, run_id="run00000001")
    assert pipeline.leakage(cs.samples) == {}
    assert set(cs.samples["split"]) <= {"train", "val", "test"}
    reviewed = cs.samples[cs.samples["label_source"] == "review"]
    assert len(reviewed) >= 1 and (reviewed["reviewer"] == "simulated-reviewer").all()
    test = cs.samples[cs.samples["split"] == "test"]
    assert len(test) and (test["label_source"] == "review").all(), "gates judge on reviewed labels only"
    assert (cs.samples["selection_reason"] == "reviewed_seed").any(), "the teacher's reviewed seed frames are kept"
    assert repo.resolve(cs.branch) == cs.commit_id
    assert repo.get(cs.commit_id, f"cohorts/{COHORT}/samples.parquet")
    merged = repo.merge(cs.branch, "main", "release", {"cohort": COHORT})
    assert repo.list(merged.id, f"cohorts/{COHORT}/")

    # planted leakage is caught
    leaky = cs.samples.copy()
    leaky.loc[leaky.index[0], "split"] = "test" if leaky.iloc[0]["split"] != "test" else "train"
    assert pipeline.leakage(leaky)

    # one campaign round raises coverage of a targeted slice
    campaign, before = pipeline.campaign_for(home, COHORT, policy, drives_per_vehicle=1)
    assert campaign is not None
    campaign = Campaign.load(campaign.save(home.root / "campaigns"))
    simulate_fleet(registry, home, profile="small", campaign=campaign)
    ingest_partition(home, registry.cohort(COHORT))
    t2 = pipeline.build_teacher(home, COHORT, policy, _review(home))
    pipeline.auto_label(home, COHORT, t2.digest)
    pipeline.queue_reviews(home, COHORT, policy, _review(home))
    _, after = pipeline.campaign_for(home, COHORT, policy)
    gained = {tg.slice: after[tg.slice] - before[tg.slice] for tg in campaign.targets}
    assert max(gained.values()) > 0, (before, after)


def test_bad_review_returns_are_quarantined_and_the_rest_applied(small, tmp_path):
    home = HomeLayout(tmp_path / "home")
    shutil.copytree(small["home"].root, home.root)
    ontology = load_ontology()
    frames, _ = pipeline.load_frames(home, COHORT)
    known = set(zip(frames["drive_id"], frames["frame_index"].astype(int)))
    drive = frames[frames["drive_id"] == frames["drive_id"].iloc[0]]
    export_task(home, COHORT, drive["drive_id"].iloc[0], drive["vehicle_id"].iloc[0], "qa", [
        openlabel.FrameLabel(int(r.frame_index), float(r.timestamp), r.object_sha256,
                             {c: r[c] for c in pipeline.ODD}, []) for _, r in drive.iterrows()], label_version="qa")
    answer_tasks(home, COHORT)
    out = returns_dir(home, COHORT)
    before = collect_returns(home, COHORT, known, ontology)
    good = sorted(p for p in out.glob("*.json") if len(json.loads(p.read_text())["openlabel"].get("objects") or {}))
    assert good
    # a corrupt file, a class outside the ontology, and a review of a frame that does not exist
    (out / "corrupt.json").write_text("{ not json")
    doc = json.loads(good[0].read_text())
    bad_class = json.loads(json.dumps(doc))
    objects = bad_class["openlabel"].get("objects") or {}
    if not objects:
        pytest.skip("the first return has no objects to corrupt")
    next(iter(objects.values()))["type"] = "unicorn"
    (out / "unknown_class.json").write_text(json.dumps(bad_class))
    meta, fr = openlabel.parse_document(doc)
    ghost = fr[0]
    ghost.frame_index = 99999
    openlabel.write_document(out / "ghost_frame.json", openlabel.drive_document(meta["drive_id"], meta["vehicle_id"], COHORT, [ghost], label_version="x"))
    after = collect_returns(home, COHORT, known, ontology)
    reasons = sorted(q.reason for q in after.quarantined)
    assert reasons == ["openlabel_invalid", "unknown_class"]
    for q in after.quarantined:
        assert (json.loads(open(q.moved_to + ".reason.json").read())["reason"]) == q.reason
    assert after.rejected_frames == [{"drive_id": meta["drive_id"], "frame_index": 99999, "reason": "unknown_sample"}]
    assert after.reviewed_frames == before.reviewed_frames, "every good review is still applied"
    assert len(after.labels) == len(before.labels)


def _materialize_all(home, root, instance):
    import dagster as dg

    from avops_assets.definitions import defs
    from resources import AvopsHome, DatasetVersioning, FleetRegistryResource, ModelRegistryResource, ReviewTeam

    resources = {"avops_home": AvopsHome(root=str(home.root)), "fleet": FleetRegistryResource(path=str(root / "fleet.yaml")),
                 "dataset_versioning": DatasetVersioning(home=str(home.root)), "review_team": ReviewTeam(mode="simulated"),
                 "model_registry": ModelRegistryResource(home=str(home.root))}
    d = defs()
    stages = ("ingest", "curation")  # training has its own tests (tests/test_training.py)
    assets = [a for a in d.assets if a.key.path[0] in stages]
    checks = [c for c in d.asset_checks if all(k.asset_key.path[0] in stages for k in c.check_keys)]
    return dg.materialize(assets + checks, partition_key=COHORT, instance=instance, resources=resources, raise_on_error=False)


def test_blocking_checks_keep_an_unfit_set_out_of_main(small, tmp_path, monkeypatch):
    """The whole curation graph in Dagster; a slice minimum that cannot be met stops the merge into main."""
    import dagster as dg

    from avops_assets.partitions import COHORTS

    home = HomeLayout(tmp_path / "home")
    shutil.copytree(small["home"].root, home.root)
    raw = yaml.safe_load((small["root"] / "curation.yaml").read_text())
    raw["slices"]["impossible"] = {"where": {"weather": "snow", "illumination": "night", "roadworks": True}, "min_samples": 500, "target_samples": 500}
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AVOPS_CURATION_POLICY", str(tmp_path / "strict.yaml"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [COHORT])
    repo = _repo(home)
    repo.ensure()
    main_before = repo.resolve("main")
    result = _materialize_all(home, small["root"], instance)
    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["slices_meet_gate_policy"] is False
    assert checks["splits_disjoint_by_drive"] is True and checks["openlabel_documents_valid"] is True
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "curation/curated_sets" in materialized and "curation/campaigns" in materialized
    assert "curation/released_sets" not in materialized, "a failed blocking check must stop the merge into main"
    assert repo.resolve("main") == main_before, "main never received the unfit set"

    monkeypatch.setenv("AVOPS_CURATION_POLICY", str(small["root"] / "curation.yaml"))
    ok = _materialize_all(home, small["root"], instance)
    assert ok.success
    assert repo.resolve("main") != main_before
    released = next(e for e in ok.get_asset_materialization_events() if e.asset_key.to_user_string() == "curation/released_sets")
    assert repo.resolve("main") == released.materialization.metadata["dataset_version"].value
    assert f"cohorts/{COHORT}/samples.parquet" in repo.list("main", f"cohorts/{COHORT}/")
