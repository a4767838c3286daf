"""Dossiers: every regime's section from one run, open placeholders, signed and logged; an auditor's offline check."""

import dataclasses
import json
import shutil

import pytest
from click.testing import CliRunner

from avops.cli import main
from avops.compliance import dossier
from avops.compliance.verify import verify_folder
from avops.training import pipeline as tp


@pytest.fixture()
def written(packaged, tmp_path):
    doc, lin = dossier.build(packaged["home"], packaged["cohort"], packaged["reg"], packaged["repo"], "run-dossier")
    folder = dossier.write(packaged["home"], doc, packaged["reg"])
    copy = tmp_path / "auditor" / folder.name  # what the auditor receives: a copy, away from the avops home
    shutil.copytree(folder, copy)
    return {**packaged, "doc": doc, "folder": copy}


def test_a_dossier_covers_every_regime_from_one_run_and_verifies_offline(written):
    doc, folder = written["doc"], written["folder"]
    assert doc["gates_verdict"] == "passed" and doc["lineage"]["verified"]
    assert set(doc["regimes"]) >= {"iso26262", "sotif", "iso_pas_8800", "eu_ai_act", "unece_r156", "unece_r155", "gb_t", "nhtsa"}
    filled = [r for r in doc["mapping"] if r["status"] == "filled"]
    assert len(filled) >= 20, [r for r in doc["mapping"] if r["status"] != "filled"]
    assert {i["asks"] for i in doc["open_items"]} >= {"hazards and ASIL", "whether the update affects type approval",
                                                      "acceptance criteria values and rationale"}
    assert all(i["value"].startswith("OPEN") for i in doc["open_items"]), "what only a person can supply is never invented"
    s = doc["sections"]
    assert s["integrity"]["sha256"] == doc["subject"]["engine_sha256"] == written["pkg"].releases[0].sha256
    assert s["software_identification"]["rxswin"].startswith("RXSWIN-X86-LINEAGE-PERCEPTION")
    assert [t["passed"] for t in s["security_tests"]] == [True, True, True], s["security_tests"]
    assert s["gate_results"]["evidence_sha256"] == written["evidence"]
    html = (folder / "dossier.html").read_text()
    assert "<svg" in html and "src=" not in html and "href=" not in html and "<script" not in html, "self-contained"
    problems, _ = verify_folder(folder)
    assert problems == []
    out = CliRunner().invoke(main, ["dossier", "verify", str(folder)])
    assert out.exit_code == 0 and "dossier verified" in out.output, out.output


def _flip(path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_changed_byte_anywhere_is_named(written):
    folder = written["folder"]
    ckpt = folder / "artifacts" / written["checkpoint"]
    for target, expect in ((ckpt, f"artifact checkpoint (perception v{written['version']}) {written['checkpoint'][:12]}: its bytes changed"),
                           (folder / "dossier.json", "dossier.json: changed after signing"),
                           (folder / "dossier.html", "dossier.html: changed after signing")):
        backup = target.read_bytes()
        _flip(target)
        problems, _ = verify_folder(folder)
        assert any(expect in p for p in problems), (target.name, problems)
        result = CliRunner().invoke(main, ["dossier", "verify", str(folder)])
        assert result.exit_code == 1 and expect.split(":")[0] in result.output
        target.write_bytes(backup)
    assert verify_folder(folder)[0] == []


def test_an_edited_audit_log_or_proof_is_named(written):
    folder = written["folder"]
    log = json.loads((folder / "audit" / "log.json").read_text())
    log["events"][0]["entry"] = log["events"][0]["entry"].replace("test", "tset")
    (folder / "audit" / "log.json").write_text(json.dumps(log))
    problems, _ = verify_folder(folder)
    assert any(p.startswith("audit/log.json: event 0") and "edited" in p for p in problems), problems
    proof = json.loads((folder / "audit" / "proof.json").read_text())
    proof["event"]["data"]["dossier_sha256"] = "0" * 64
    proof["entry"] = json.dumps(proof["event"], sort_keys=True, separators=(",", ":"))
    (folder / "audit" / "proof.json").write_text(json.dumps(proof))
    problems, _ = verify_folder(folder)
    assert any("audit/proof.json: the event entry does not hash to the proof's leaf hash" in p for p in problems), problems
    assert any("the audit log entry records dossier 000000000000" in p for p in problems), problems


def test_a_dossier_of_a_model_whose_gates_failed_shows_the_failure(packaged):
    strict = dataclasses.replace(packaged["policy"], gates=tuple(dataclasses.replace(g, min_lower_bound=0.99)
                                                                  if g.slice.name == "overall" else g for g in packaged["policy"].gates))
    tp.evaluate(packaged["home"], packaged["repo"], packaged["reg"], packaged["model_cohort"],
                packaged["version"], strict, "re-evaluation")
    doc, _ = dossier.build(packaged["home"], packaged["cohort"], packaged["reg"], packaged["repo"], "run-failed")
    assert doc["gates_verdict"] == "FAILED: overall"
    assert next(g for g in doc["sections"]["gate_results"]["gates"] if g["gate"] == "overall")["status"] == "fail"
    folder = dossier.write(packaged["home"], doc, packaged["reg"])
    assert "Safety gates: FAILED: overall" in (folder / "dossier.html").read_text()
    assert verify_folder(folder)[0] == [], "an honest dossier of a failure verifies"


def test_a_sign_off_recorded_by_a_person_fills_its_item_and_nothing_else(packaged):
    subject = f"perception/v{packaged['version']}"
    before, _ = dossier.build(packaged["home"], packaged["cohort"], packaged["reg"], packaged["repo"])
    assert any("sign-off" in i["asks"] for i in before["open_items"])
    packaged["reg"].audit.append("approval", subject, {"by": "J. Doe, functional safety manager",
                                                      "statement": "release approved for the canary fleet"}, "J. Doe")
    doc, _ = dossier.build(packaged["home"], packaged["cohort"], packaged["reg"], packaged["repo"])
    assert [a["by"] for a in doc["sections"]["approvals"]] == ["J. Doe, functional safety manager"]
    assert not any("sign-off" in i["asks"] for i in doc["open_items"])
    assert len(doc["open_items"]) == len(before["open_items"]) - 1, "hazard analysis, rationale... stay open"


def test_a_gate_threshold_changed_in_the_copied_evidence_is_named(written):
    folder = written["folder"]
    path = folder / "artifacts" / written["evidence"]
    evidence = json.loads(path.read_text())
    strictest = max(evidence["gates"], key=lambda g: g["threshold"])
    strictest["threshold"] = 0.0
    path.write_text(json.dumps(evidence, indent=2, sort_keys=True))
    problems, _ = verify_folder(folder)
    assert any(p.startswith("artifact gate result") and "its bytes changed" in p for p in problems), problems


def test_a_cohort_without_a_package_gets_a_dossier_that_says_why(packaged):
    model_cohort = dataclasses.replace(packaged["cohort"], id=packaged["model_cohort"], soc="orin")  # evaluated, never packaged
    doc, lin = dossier.build(packaged["home"], model_cohort, packaged["reg"], packaged["repo"], "run-unpackaged")
    assert doc["no_package"] and "engines need a GPU executor" in doc["no_package"], doc["no_package"]
    assert doc["subject"]["engine_sha256"] is None and doc["subject"]["checkpoint_sha256"] == packaged["checkpoint"]
    assert doc["sections"]["integrity"] is None and doc["sections"]["security_tests"] == []
    statuses = {r["asks"]: r["status"] for r in doc["mapping"]}
    assert statuses["integrity data and authenticity"] == "missing: integrity", "missing, never filled"
    assert statuses["verification reports"] == "filled" and not lin.problems
    folder = dossier.write(packaged["home"], doc, packaged["reg"])
    assert "No OTA package" in (folder / "dossier.html").read_text()
    assert verify_folder(folder)[0] == []
