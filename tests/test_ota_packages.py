"""OTA packages: attested engines the matrix allows, published through Uptane; per-component rollback."""

import dataclasses
import json
import shutil
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from avops.cli import main
from avops.compile import pipeline as cp
from avops.compile.socs import load_catalog
from avops.ota import packages
from avops.ota.keys import KeyRing
from avops.ota.uptane import Uptane, metadata_state
from avops.store import ObjectStore
from avops.vehicle.verifier import Ecu, Primary, Sources


@pytest.fixture()
def sim_cohort(built):
    """The gold cohort as if its vehicles carried the x86 simulation ECU, so its x86 engines are allowed."""
    return dataclasses.replace(built["cohort"], id="x86-sim-eu", soc="x86-ecu")


def _bundle(home, cohort: str, dest):
    shutil.copytree(home.root / "ota/image", dest / "image")
    shutil.copytree(home.root / f"ota/director/{cohort}", dest / "director")
    return Sources.bundle(dest)


def test_a_package_ships_the_allowed_engine_with_a_verifiable_attestation_and_sbom(built, sim_cohort, tmp_path):
    home, socs = built["home"], load_catalog()
    records = [dict(r, cohort=sim_cohort.id) for r in built["records"]]  # as if built for this cohort's vehicles
    matrix = cp.compatibility_rows(records, sim_cohort, socs)
    pkg = packages.build_and_publish(home, sim_cohort, matrix, records, "run-1")
    [e] = pkg.engines
    assert e["precision"] == "int8", "int8 is preferred when the matrix allows it"
    [r] = pkg.releases
    assert r.sha256 == e["engine_sha256"] and r.release_counter >= 1
    store = ObjectStore(home.objects)
    envelope = json.loads(store.get_bytes(pkg.attestations[r.path]))
    statement = packages.attestation_payload(envelope)
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": r.path, "digest": {"sha256": e["engine_sha256"]}}]
    deps = {d["uri"].split("/")[0]: d["digest"]["sha256"] for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["avops:model"] == e["source_checkpoint_sha256"] and deps["avops:onnx"] == e["source_onnx_sha256"]
    keys = KeyRing(home.root / "ota/keys").public_keys(packages.ATTESTATION_ROLE)
    data = store.get_bytes(e["engine_sha256"])
    assert packages.verify(envelope, keys, data, r.path) == []
    assert packages.verify(envelope, keys, data + b"x", r.path), "other bytes do not match the attestation's subject"
    sbom = json.loads(store.get_bytes(pkg.sboms[r.path]))
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    assert any(h["content"] == e["engine_sha256"] for c in sbom["components"] for h in c.get("hashes", []))
    # the vehicle installs it from an offline bundle after full verification
    ecu = Primary(tmp_path / "ecu", Ecu("adas_domain", next(x.hardware_id for x in sim_cohort.ecus if x.name == "adas_domain")))
    ecu.init((home.root / "ota/image/metadata/1.root.json").read_bytes(),
             (home.root / f"ota/director/{sim_cohort.id}/metadata/1.root.json").read_bytes())
    report = ecu.update(_bundle(home, sim_cohort.id, tmp_path / "bundle"), datetime.now(timezone.utc))
    assert [i.sha256 for i in report.installed] == [e["engine_sha256"]]


def test_nothing_is_packaged_that_the_matrix_does_not_allow(built):
    matrix = cp.compatibility_rows(built["records"], built["cohort"], load_catalog())  # orin vehicles, x86 engines
    with pytest.raises(packages.PackageRefused, match="no engine is allowed.*built for x86-ecu, vehicles have orin"):
        packages.build_and_publish(built["home"], built["cohort"], matrix, built["records"], "run-2")


def test_rollback_of_one_component_leaves_the_others_untouched(built, sim_cohort, tmp_path):
    home, socs = built["home"], load_catalog()
    cohort = dataclasses.replace(sim_cohort, id="x86-sim-rollback")
    hw = next(x.hardware_id for x in cohort.ecus if x.name == "adas_domain")
    records = [dict(r, cohort=cohort.id) for r in built["records"]]
    matrix = cp.compatibility_rows(records, cohort, socs)
    first = packages.build_and_publish(home, cohort, matrix, records, "run-a")
    fp32_only = [dict(r, status="blocked") if r["precision"] == "int8" else r for r in records]
    second = packages.build_and_publish(home, cohort, matrix, fp32_only, "run-b")
    assert first.releases[0].sha256 != second.releases[0].sha256
    Uptane(home).release(cohort.id, "maintenance", "x86-ecu", "rul-model.onnx", b"maintenance model", "adas_domain", hw, "m-1")
    director_before = Uptane(home).director(cohort.id).targets().targets
    maintenance_before = director_before["maintenance/x86-ecu/rul-model.onnx"].to_dict()
    Uptane(home).director("another-cohort")
    state_before = metadata_state(home)

    result = CliRunner().invoke(main, ["ota", "rollback", "--component", "perception", "--cohort", cohort.id,
                                       "--home", str(home.root), "--reason", "field reports"])
    assert result.exit_code == 0, result.output
    director = Uptane(home).director(cohort.id).targets().targets
    perception = [t for p, t in director.items() if p.startswith("perception/")]
    assert [t.hashes["sha256"] for t in perception] == [first.releases[0].sha256], "back to the previous image"
    assert perception[0].unrecognized_fields["custom"]["release_counter"] > second.releases[0].release_counter
    assert director["maintenance/x86-ecu/rul-model.onnx"].to_dict() == maintenance_before, "other components untouched"
    state_after = metadata_state(home)
    changed = sorted(k for k in state_after if state_after[k] != state_before.get(k))
    assert changed == [f"director/{cohort.id}/{r}" for r in ("snapshot", "targets", "timestamp")], changed
    assert all(state_after[k][0] == state_before[k][0] + 1 for k in changed)
    log = [json.loads(x) for x in (home.root / f"ota/releases/{cohort.id}.jsonl").read_text().splitlines()]
    assert log[-1]["kind"] == "rollback" and log[-1]["reason"] == "field reports"
    # a vehicle that had the second image accepts the roll-forward to the old content
    ecu = Primary(tmp_path / "ecu", Ecu("adas_domain", hw))
    ecu.init((home.root / "ota/image/metadata/1.root.json").read_bytes(),
             (home.root / f"ota/director/{cohort.id}/metadata/1.root.json").read_bytes())
    report = ecu.update(_bundle(home, cohort.id, tmp_path / "b"), datetime.now(timezone.utc))
    assert {i.path.split("/")[0]: i.sha256 for i in report.installed}["perception"] == first.releases[0].sha256
    again = CliRunner().invoke(main, ["ota", "rollback", "--component", "nothing", "--cohort", cohort.id, "--home", str(home.root)])
    assert again.exit_code != 0 and "never received nothing" in again.output
