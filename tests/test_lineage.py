"""Verified lineage: package -> engine -> checkpoint -> dataset commit (-> raw drives -> landed files); tampering is named."""

import json
import shutil

from avops import datasets
from avops.home import HomeLayout
from avops.lineage import Lineage, _Checker, _raw, package_lineage
from avops.store import ObjectStore


def _lineage(p) -> Lineage:
    return package_lineage(p["home"], p["cohort"].id, p["reg"], p["repo"])


def test_a_package_traces_to_its_checkpoint_gates_and_dataset_with_every_digest_recomputed(packaged):
    lin = _lineage(packaged)
    assert lin.problems == []
    kinds = {n.kind for n in lin.nodes.values()}
    assert {"package", "engine", "attestation", "sbom", "onnx", "checkpoint", "provenance", "gate result", "dataset commit",
            "curated set"} <= kinds
    assert all(n.verified is not False for n in lin.nodes.values())
    [ckpt] = [n for n in lin.nodes.values() if n.kind == "checkpoint"]
    assert ckpt.digest == packaged["checkpoint"] and ckpt.verified
    [ds] = [n for n in lin.nodes.values() if n.kind == "dataset commit"]
    assert ds.verified and ds.detail["files_read"] >= 2
    [gates] = [n for n in lin.nodes.values() if n.kind == "gate result"]
    assert gates.digest == packaged["evidence"] and isinstance(gates.detail["audit_event"], int)
    out = lin.to_dict()
    assert out["verified"] and len(out["edges"]) == len(out["nodes"]) - 1
    assert "palegreen" in lin.to_dot() and "salmon" not in lin.to_dot()


def _overwrite(store: ObjectStore, digest: str, data: bytes) -> None:
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(data)


def test_a_swapped_checkpoint_file_is_named(packaged):
    store = ObjectStore(packaged["home"].objects)
    data = store.get_bytes(packaged["checkpoint"])
    _overwrite(store, packaged["checkpoint"], data[:-1] + bytes([data[-1] ^ 0x01]))  # one flipped bit
    lin = _lineage(packaged)
    assert any(p.startswith("perception v") and "stored bytes hash to" in p for p in lin.problems), lin.problems
    assert 'fillcolor=salmon' in lin.to_dot()


def test_a_gate_threshold_changed_after_the_fact_is_named(packaged):
    store = ObjectStore(packaged["home"].objects)
    evidence = json.loads(store.get_bytes(packaged["evidence"]))
    strictest = max(evidence["gates"], key=lambda g: g["threshold"])
    assert strictest["threshold"] > 0
    strictest["threshold"] = 0.0  # "it always passed"
    _overwrite(store, packaged["evidence"], json.dumps(evidence, indent=2, sort_keys=True).encode())
    lin = _lineage(packaged)
    assert any("gates pass" in p and "changed after it was recorded" in p for p in lin.problems), lin.problems


def test_an_image_repository_target_that_differs_from_the_engine_is_named(packaged):
    rel = packaged["pkg"].releases[0]
    folder, name = rel.path.rsplit("/", 1)
    (packaged["home"].root / "ota/image/targets" / folder / f"{rel.sha256}.{name}").write_bytes(b"not the engine")
    lin = _lineage(packaged)
    assert any("the image repository serves bytes hashing to" in p for p in lin.problems), lin.problems


def test_raw_drives_down_to_landed_file_digests_and_a_changed_file_is_named(gold, tmp_path):
    shutil.copytree(gold["home"].root, tmp_path / "home")
    home = HomeLayout(tmp_path / "home")
    store = ObjectStore(home.objects)
    raw = datasets.current(store, home.refs, "ingest/raw_drives", "orin-my2024-eu")
    ck = _Checker(home, None, None)
    lin = Lineage()
    _raw(lin, ck, None, raw.digest, "orin-my2024-eu")
    files = [n for n in lin.nodes.values() if n.kind == "landed file"]
    assert len(files) == len(raw.body["inputs"]) > 0 and all(n.verified for n in files) and lin.problems == []
    first = raw.body["inputs"][0]
    (home.landing / first["file"]).write_bytes(b"re-recorded")
    lin = Lineage()
    _raw(lin, ck, None, raw.digest, "orin-my2024-eu")
    assert lin.problems == [f"{first['file'].rsplit('/', 1)[-1]}: {first['file']} now hashes to "
                            f"{__import__('hashlib').sha256(b're-recorded').hexdigest()[:12]}, ingest recorded {first['sha256'][:12]}"]


def test_the_dagster_records_must_vouch_for_every_node(packaged):
    import dagster as dg

    from avops_assets.lineage_cli import cross_check, dagster_records

    lin = _lineage(packaged)
    cohort = packaged["cohort"].id
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("cohorts", [cohort])
    by_kind = {n.kind: n for n in lin.nodes.values()}
    for kind, (asset, entry) in {"package": ("ota/packages", "manifest_sha256"), "checkpoint": ("training/checkpoints", "checkpoint_sha256"),
                                 "gate result": ("training/evaluation", "evidence_sha256"),
                                 "dataset commit": ("curation/released_sets", "dataset_version")}.items():
        instance.report_runless_asset_event(dg.AssetMaterialization(asset.split("/"), partition=cohort,
                                                                    metadata={entry: by_kind[kind].digest}))
    # a later materialization with another digest does not hide the one that recorded this package
    instance.report_runless_asset_event(dg.AssetMaterialization(["ota", "packages"], partition=cohort, metadata={"manifest_sha256": "f" * 64}))
    cross_check(lin, dagster_records(instance, cohort))
    assert lin.problems == [] and "run_id" in by_kind["package"].detail["dagster"]
    # the UI's lineage says another checkpoint was trained: the two disagree, and that is reported
    other = _lineage(packaged)
    instance2 = dg.DagsterInstance.ephemeral()
    instance2.report_runless_asset_event(dg.AssetMaterialization(["training", "checkpoints"], partition=cohort,
                                                                 metadata={"checkpoint_sha256": "e" * 64}))
    cross_check(other, dagster_records(instance2, cohort))
    assert any("no Dagster materialization of training/checkpoints" in p for p in other.problems), other.problems


def test_the_dagster_cross_check_finds_models_trained_outside_training():
    """A battery model's checkpoint and gates are recorded by battery/soh_models in its chemistry's partition, a
    maintenance model's by maintenance/models in the cohort's: the cross-check looks there, not in training/."""
    from avops.lineage import Lineage, Node
    from avops_assets.lineage_cli import cross_check, model_partitions

    lin = Lineage()
    pkg = lin.add(Node("package:p", "package", "package", "p" * 64))
    for comp, scope, d in (("battery_soh", "lfp", "b"), ("maintenance", "orin-my2025-cn", "m")):
        ck = lin.add(Node(f"checkpoint:{d}", "checkpoint", f"{comp} v2", d * 64, None, {"cohort": scope}), pkg.id, "exported from")
        lin.add(Node(f"gates:{d}", "gate result", "passed", d.upper() * 64), ck.id, "gated by")
    assert model_partitions(lin, "orin-my2025-cn") == {("battery/soh_models", "lfp"), ("maintenance/models", "orin-my2025-cn")}
    records = {"ota/packages": {"p" * 64: {"run_id": "r"}},
               "battery/soh_models[lfp]": {"b" * 64: {"run_id": "r1"}, "B" * 64: {"run_id": "r1"}},
               "maintenance/models": {"m" * 64: {"run_id": "r2"}, "M" * 64: {"run_id": "r2"}}}
    cross_check(lin, records, "orin-my2025-cn")
    assert not lin.problems
    del records["battery/soh_models[lfp]"]["B" * 64]  # the UI never recorded that gate evidence
    lin2 = Lineage()
    pkg = lin2.add(Node("package:p", "package", "package", "p" * 64))
    ck = lin2.add(Node("checkpoint:b", "checkpoint", "battery_soh v2", "b" * 64, None, {"cohort": "lfp"}), pkg.id, "exported from")
    lin2.add(Node("gates:b", "gate result", "passed", "B" * 64), ck.id, "gated by")
    cross_check(lin2, records, "orin-my2025-cn")
    assert len(lin2.problems) == 1 and "battery/soh_models" in lin2.problems[0]
