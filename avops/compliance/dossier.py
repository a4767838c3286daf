"""Compliance dossiers: one run's evidence for a cohort's package, mapped to each regime, signed and logged.

The dossier is built from the verified lineage (:mod:`avops.lineage`), the gate evidence the
audit log recorded for the packaged model, the registry, the release log, the rollout state and
shadow mode. Fields only a person can supply (hazard analysis, acceptance-criteria rationale,
type-approval impact, sign-offs) are OPEN placeholders, never invented. A dossier never claims a
gate passed that its evidence says failed: the verdict is computed from the evidence itself.

It is written as a folder an auditor can copy and check offline (:mod:`avops.compliance.verify`):

    dossier.json        the machine-readable dossier
    dossier.html        the same, self-contained (inline CSS and SVG charts, no network)
    index.dsse.json     DSSE envelope over the index: sha256 of dossier.json, dossier.html and every artifact
    artifacts/<sha256>  copies of the referenced artifacts (package manifest, engine, ONNX, checkpoint,
                        provenance, attestation, SBOM, gate evidence)
    audit/log.json      the audit log as exported when the dossier was logged
    audit/proof.json    the inclusion proof of the dossier's log entry against a signed tree head
    keys/*.json         public keys: dossier signer, audit log, package attestation builder
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml
from securesystemslib.dsse import Envelope

from avops import datasets
from avops.audit import log as audit
from avops.compliance.html import render_html
from avops.fleet_registry import Cohort, project_root
from avops.home import HomeLayout
from avops.lineage import Lineage, package_lineage
from avops.ota import packages as ota_packages
from avops.ota.keys import KeyRing
from avops.ota.uptane import release_history
from avops.store import ObjectStore, atomic_write_bytes, sha256_bytes, open_store

FORMAT = "avops-dossier/1"
INDEX_TYPE = "application/vnd.avops.dossier-index+json"
SIGNER_ROLE = "dossier/signer"
OPEN = "OPEN: to be supplied by a person (not generated)"
COPY_KINDS = {"package", "engine", "onnx", "checkpoint", "provenance", "attestation", "sbom", "gate result"}


class DossierError(RuntimeError):
    pass


def load_mapping(path: Path | None = None) -> dict:
    p = Path(path or project_root() / "config" / "compliance.yaml")
    raw = yaml.safe_load(p.read_text())
    if not isinstance(raw, dict) or "regimes" not in raw:
        raise DossierError(f"{p}: expected a mapping with 'regimes'")
    return raw["regimes"]


def _keys(home: HomeLayout) -> KeyRing:
    return KeyRing(home.root / "compliance" / "keys")


def _signer(home: HomeLayout):
    ring = _keys(home)
    if not ring.signers(SIGNER_ROLE):
        ring.generate(SIGNER_ROLE, 1)
    return ring.signers(SIGNER_ROLE)[0]


def _by_kind(lin: Lineage) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in lin.nodes.values():
        out.setdefault(n.kind, []).append(n)
    return out


def build(home: HomeLayout, cohort: Cohort, registry, repo, run_id: str | None = None, mapping: dict | None = None) -> tuple[dict, Lineage]:
    """The dossier document for ``cohort``'s current package.

    A cohort with no package (its candidate was blocked at the gates, or its SoC's toolchain needs
    a GPU executor) still gets a dossier of its latest evaluated model: the software-update
    sections then say why there is no update, and the mapping marks them missing, not filled.
    """
    store = open_store(home)
    try:
        lin = package_lineage(home, cohort.id, registry, repo)
        no_package = None
    except LookupError as exc:
        lin, mv = _model_lineage(home, cohort, registry, repo)
        no_package = f"{exc}; {ota_packages.why_no_package(home, cohort)}"
    by_kind = _by_kind(lin)
    pkg = rel = eng = None
    others: list[dict] = []
    if no_package is None:
        pkg_node = by_kind["package"][0]
        pkg = datasets.Manifest(pkg_node.digest, store.get_json(pkg_node.digest))
        engines = {e["engine_sha256"]: e for e in pkg.body["engines"]}
        releases = datasets.read_table(store, pkg, "releases").to_pylist()
        rel = next((r for r in releases if engines[r["sha256"]]["component"] == "perception"), None)
        others = [{"component": engines[r["sha256"]]["component"], "ecu": r.get("ecu"), "target": r["path"], "sha256": r["sha256"],
                   "model_version": engines[r["sha256"]]["model_version"], "release_counter": r["release_counter"]}
                  for r in releases if r is not rel]
        if rel is None:  # the package carries other components only (perception is not built for this SoC here)
            lin, mv = _model_lineage(home, cohort, registry, repo)
            no_package = f"the package carries no perception engine; {ota_packages.why_no_package(home, cohort)}"
            by_kind, pkg = _by_kind(lin), None
        else:
            eng = engines[rel["sha256"]]
            mv = registry.get(eng["component"], int(eng["model_version"]))
    prov = store.get_json(mv.lineage["provenance_sha256"])
    gate_events = audit_events(registry, "gate_result", f"{mv.name}/v{mv.version}")
    evidence = store.get_json(json.loads(gate_events[-1].entry)["data"]["evidence_sha256"]) if gate_events else None
    gates = evidence["gates"] if evidence else []
    failing = [g["gate"] for g in gates if g["status"] != "pass" and g["blocks"]] + \
        [f"incident {i}" for i in (evidence or {}).get("incident_regressions", [])]
    verdict = "no gate evidence" if evidence is None else ("FAILED: " + ", ".join(failing) if failing else "passed")
    history = release_history(home, cohort.id)
    current_sha = rel["sha256"] if rel else None
    previous = next((h for h in reversed(history) if h["component"] == mv.name and h["sha256"] != current_sha), None)
    prev_eval = None
    if previous and previous.get("model_version"):
        ev = audit_events(registry, "gate_result", f"{mv.name}/v{previous['model_version']}")
        prev_eval = store.get_json(json.loads(ev[-1].entry)["data"]["evidence_sha256"]) if ev else None
    samples = _samples(repo, prov["dataset"]["commit_id"], prov["cohort"])
    shadow = datasets.current(store, home.refs, "training/shadow", cohort.id)
    shadow_rates = datasets.read_table(store, shadow, "rates").to_pylist() if shadow else []
    matrix = _matrix(store, pkg.body.get("matrix_manifest_sha256"), rel["sha256"]) if pkg else None
    adas = next((e for e in cohort.ecus if e.name == "adas_domain"), None)
    rxswin = f"RXSWIN-{cohort.id}-{mv.name}-v{mv.version}-{rel['sha256'][:8]}".upper() if rel else None
    keys = _key_inventory(home, registry)
    sections = {
        "configuration_baseline": {"artifacts": {n.kind + ":" + n.label: n.digest for n in lin.nodes.values() if n.digest},
                                   "code": prov.get("code"), "hyperparameters": prov.get("hyperparameters"), "seed": prov.get("seed")},
        "change_impact": _change_impact(previous, prev_eval, evidence, mv.version),
        "gate_results": {"verdict": verdict, "policy_sha256": (evidence or {}).get("policy", {}).get("sha256"),
                         "test_frames": (evidence or {}).get("test_frames"), "gates": gates,
                         "evidence_sha256": json.loads(gate_events[-1].entry)["data"]["evidence_sha256"] if gate_events else None,
                         "audit_event": gate_events[-1].index if gate_events else None},
        "incident_replay": {"library_sha256": (evidence or {}).get("incident_library_sha256"),
                            "replayed": len((evidence or {}).get("incidents", [])),
                            "passed": sum(bool(i.get("passed")) for i in (evidence or {}).get("incidents", [])),
                            "regressions": (evidence or {}).get("incident_regressions", []),
                            "incidents": (evidence or {}).get("incidents", [])},
        "tool_confidence": None if eng is None else {"compiler": f"{eng['toolchain']} {eng['toolchain_version']}", "precision": eng["precision"],
                            "reference": "FP32 PyTorch checkpoint on the same test frames",
                            "equivalence_per_slice": eng.get("parity", {}).get("slices", {}), "parity_passed": eng.get("parity", {}).get("passed"),
                            "max_allowed_drop": next(iter(eng.get("parity", {}).get("slices", {}).values()), {}).get("max_drop")},
        "odd": {"slices_evaluated": [g["gate"] for g in gates], "region": cohort.region, "platform": cohort.platform,
                "exposure_frames": _exposure(samples)},
        "field_monitoring": {"shadow_mode": shadow_rates, "shadow_candidate": shadow.body.get("candidate_version") if shadow else None,
                             "drift": "not monitored yet: fleet telemetry drift lands with the features stage (open)"},
        "dataset_provenance": {"dataset_commit": prov["dataset"]["commit_id"], "files_read": prov["dataset"].get("files_read", {}),
                               "raw_drives": [n.label for n in by_kind.get("landed file", [])],
                               "landed_file_sha256": {n.label: n.digest for n in by_kind.get("landed file", [])}},
        "split_independence": _splits(samples),
        "labeling": _labeling(samples),
        "slice_coverage": next((n.detail.get("coverage") for n in by_kind.get("curated set", [])), None),
        "frameworks": prov.get("libraries"),
        "architecture": {"architecture": prov.get("architecture"), "classes": prov.get("classes"),
                         "hyperparameters": prov.get("hyperparameters"), "epochs_trained": len(prov.get("training_curve", [])),
                         "compute": "CPU training (torch CPU build); see frameworks"},
        "change_log": [{"at": h["at"], "kind": h["kind"], "component": h["component"], "path": h["path"], "model_version": h.get("model_version"),
                        "release_counter": h["release_counter"], "reason": h.get("reason")} for h in history],
        "audit": {"gate_result_events": [e.index for e in gate_events]},
        "approvals": [{"event": e.index, "at": e.at, **json.loads(e.entry)["data"]}
                      for e in audit_events(registry, "approval", f"{mv.name}/v{mv.version}")],
        "software_identification": None if rel is None else {"rxswin": rxswin, "ecu": adas.name if adas else None,
                                    "hardware_id": adas.hardware_id if adas else None, "component": eng["component"],
                                    "target": rel["path"], "model_version": mv.version,
                                    "other_components": others},
        "configuration_change": None if rel is None else {"before": {"path": previous["path"], "sha256": previous["sha256"],
                                            "model_version": previous.get("model_version")} if previous else None,
                                 "after": {"path": rel["path"], "sha256": rel["sha256"], "model_version": mv.version}},
        "integrity": None if rel is None else {"sha256": rel["sha256"], "length": rel["length"], "release_counter": rel["release_counter"],
                      "attestation_sha256": rel["attestation_sha256"], "signature": "TUF/Uptane image + director metadata; "
                      "SLSA v1 provenance in a DSSE envelope"},
        "target_vehicles": None if rel is None else {"cohort": cohort.id, "vehicles": [f"{cohort.id}-v{i:03d}" for i in range(cohort.vehicle_count)],
                            "model_year": cohort.model_year, "soc": cohort.soc},
        "compatibility": matrix,
        "signing_keys": keys,
        "sbom": None if rel is None else {"sha256": rel["sbom_sha256"], "format": "CycloneDX 1.6"},
        "security_tests": [] if rel is None else security_tests(home, cohort, rel),
    }
    # imported here: the occupant package pulls in Flower and Opacus, which a dossier of any other cohort does not need
    from avops.occupant.config import load_occupant_config
    from avops.occupant.evidence import occupant_sections

    sections["occupant_monitoring"], sections["occupant_privacy"] = occupant_sections(home, registry, load_occupant_config(), cohort.id)
    mapping = mapping or load_mapping()
    rows, open_items = [], []
    for rid, regime in mapping.items():
        needs = regime.get("applies_if")
        if needs and not sections.get(needs):
            rows.append({"regime": regime["name"], "clause": "—", "asks": regime.get("scope", ""), "evidence": [needs],
                         "status": f"not applicable: no {needs.replace('_', ' ')} model for this cohort"})
            continue
        for item in regime["items"]:
            if item.get("person") and item.get("evidence") and all(sections.get(e) for e in item["evidence"]):
                rows.append({"regime": regime["name"], "clause": item["clause"], "asks": item["asks"], "evidence": item["evidence"],
                             "status": "filled (by a person, see approvals)"})
                continue
            if item.get("person"):
                rows.append({"regime": regime["name"], "clause": item["clause"], "asks": item["asks"], "evidence": [], "status": OPEN})
                open_items.append({"regime": regime["name"], "clause": item["clause"], "asks": item["asks"], "value": OPEN})
                continue
            missing = [e for e in item["evidence"] if sections.get(e) in (None, [], {})]
            rows.append({"regime": regime["name"], "clause": item["clause"], "asks": item["asks"], "evidence": item["evidence"],
                         "status": "filled" if not missing else f"missing: {', '.join(missing)}"})
    doc = {
        "format": FORMAT, "cohort": cohort.id, "generated_at": datetime.now(timezone.utc).isoformat(), "run_id": run_id,
        "subject": {"component": mv.name, "model_version": mv.version, "model_stage": mv.stage, "engine": rel["path"] if rel else None,
                    "engine_sha256": rel["sha256"] if rel else None, "checkpoint_sha256": mv.artifact_sha256,
                    "package_manifest_sha256": pkg.digest if pkg else None},
        "no_package": no_package,
        "gates_verdict": verdict,
        "lineage": lin.to_dict(),
        "sections": sections,
        "mapping": rows,
        "open_items": open_items,
        "regimes": {rid: r["name"] for rid, r in mapping.items()},
        "notes": ["For vehicles type-approved under EU 2018/858 the AI Act applies through type-approval acts rather than "
                  "directly (Art. 2(2)); the Annex IV section is provided as documentation, not a conformity claim."],
    }
    return doc, lin


def _model_lineage(home: HomeLayout, cohort: Cohort, registry, repo) -> tuple[Lineage, object]:
    """The verified lineage of the cohort's latest evaluated model (no package to start from)."""
    from avops.lineage import _checkpoint, _Checker
    from avops.training import pipeline as training

    try:
        _, evidence = training.current_evaluation(home, cohort.id)
    except LookupError as exc:
        raise LookupError(f"{cohort.id} has neither a package nor an evaluated model: {exc}") from exc
    cand = evidence["candidate"]
    mv = registry.get(cand["model"], int(cand["version"]))
    lin = Lineage()
    rec = {"source_checkpoint_sha256": mv.artifact_sha256, "model_version": mv.version, "component": mv.name}
    _checkpoint(lin, _Checker(home, registry, repo), None, rec, cohort.id)
    lin.root = f"checkpoint:{mv.artifact_sha256}"
    return lin, mv


def audit_events(registry, kind: str, subject: str) -> list:
    log = getattr(registry, "audit", None)
    return log.events(kind=kind, subject=subject) if log is not None else []


def _samples(repo, commit: str, cohort: str) -> pd.DataFrame | None:
    import io

    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(repo.get(commit, f"cohorts/{cohort}/samples.parquet"))).to_pandas()
    except Exception:  # noqa: BLE001 - a set without a samples table: the sections say so
        return None


def _splits(samples: pd.DataFrame | None) -> dict:
    if samples is None or "split" not in samples:
        return {}
    drives = samples.groupby("split")["drive_id"].apply(lambda s: sorted(set(s))).to_dict()
    shared = sorted(set.intersection(*(set(v) for v in drives.values()))) if len(drives) > 1 else []
    pairs = {f"{a}/{b}": sorted(set(drives[a]) & set(drives[b])) for a in drives for b in drives if a < b}
    return {"unit": "drive", "frames": samples["split"].value_counts().to_dict(), "drives": {k: len(v) for k, v in drives.items()},
            "drives_shared_between_splits": {k: v for k, v in pairs.items() if v}, "disjoint": not shared and not any(pairs.values())}


def _labeling(samples: pd.DataFrame | None) -> dict:
    if samples is None:
        return {}
    out = {"frames": int(len(samples))}
    if "label_source" in samples:
        counts = samples["label_source"].value_counts().to_dict()
        out.update(label_source=counts, review_rate=round(counts.get("review", 0) / max(len(samples), 1), 3))
        if "split" in samples:
            test = samples[samples["split"] == "test"]
            out["test_split_review_rate"] = round(float((test["label_source"] == "review").mean()), 3) if len(test) else None
    return out


def _exposure(samples: pd.DataFrame | None) -> dict:
    if samples is None:
        return {}
    return {c: samples[c].astype(str).value_counts().to_dict() for c in ("illumination", "weather", "road_type") if c in samples}


def _matrix(store: ObjectStore, digest: str | None, engine_sha: str) -> dict:
    if not digest or not store.has(digest):
        return {}
    m = datasets.Manifest(digest, store.get_json(digest))
    rows = datasets.read_table(store, m, "matrix").to_pandas()
    mine = rows[rows["engine_sha256"] == engine_sha]
    return {"matrix_manifest_sha256": digest, "rows": json.loads(mine.to_json(orient="records"))}


def _key_inventory(home: HomeLayout, registry) -> dict:
    out = {}
    ota_keys = KeyRing(home.root / "ota" / "keys")
    index = json.loads(ota_keys.index_path.read_text()) if ota_keys.index_path.exists() else {}
    for role, entries in sorted(index.items()):
        out[role] = [{"keyid": e["keyid"], "scheme": e["public_key"].get("scheme"),
                      "storage": e["uri"].split(":", 1)[0]} for e in entries]
    log = getattr(registry, "audit", None)
    if log is not None:
        out[audit.LOG_ROLE] = [{"keyid": k, "scheme": v.scheme} for k, v in log.public_keys().items()]
    return out


def _change_impact(previous: dict | None, prev_eval: dict | None, evidence: dict | None, version: int) -> dict:
    if previous is None:
        return {"previous_release": None, "summary": "first release of this component for the cohort"}
    deltas = []
    if prev_eval and evidence:
        before = {g["gate"]: g for g in prev_eval["gates"]}
        for g in evidence["gates"]:
            b = before.get(g["gate"])
            if b is not None:
                deltas.append({"gate": g["gate"], "before": b["value"], "after": g["value"],
                               "delta": None if b["value"] is None or g["value"] is None else round(g["value"] - b["value"], 4)})
    return {"previous_release": {"path": previous["path"], "sha256": previous["sha256"], "model_version": previous.get("model_version")},
            "this_release": {"model_version": version}, "metric_deltas": deltas,
            "summary": f"perception v{previous.get('model_version')} -> v{version}"}


def security_tests(home: HomeLayout, cohort: Cohort, rel: dict) -> list[dict]:
    """Attack the real repositories as a vehicle would see them (offline bundle) and record what the verifier did."""
    from avops.vehicle.verifier import Ecu, Primary, Rejected, Sources

    adas = next((e for e in cohort.ecus if e.name == "adas_domain"), None)
    ota = home.root / "ota"
    if adas is None or not (ota / "director" / cohort.id).exists():
        return []
    results = []
    now = datetime.now(timezone.utc)

    def attempt(name: str, expect: str, hardware_id: str, tamper: bool) -> None:
        with tempfile.TemporaryDirectory(prefix="avops-sectest-") as tmp:
            t = Path(tmp)
            shutil.copytree(ota / "image", t / "bundle" / "image")
            shutil.copytree(ota / "director" / cohort.id, t / "bundle" / "director")
            if tamper:  # every engine of the component on this SoC: whichever one the director assigns now
                folder = rel["path"].rsplit("/", 1)[0]
                for repo in ("image", "director"):
                    for p in (t / "bundle" / repo / "targets" / folder).glob("*.onnx"):
                        data = p.read_bytes()
                        p.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
            ecu = Primary(t / "ecu", Ecu(adas.name, hardware_id))
            ecu.init((ota / "image" / "metadata" / "1.root.json").read_bytes(),
                     (ota / "director" / cohort.id / "metadata" / "1.root.json").read_bytes())
            try:
                ecu.update(Sources.bundle(t / "bundle"), now)
                outcome = "accepted"
            except Rejected as exc:
                outcome = f"rejected: {exc.reason}"
        results.append({"test": name, "expected": expect, "outcome": outcome,
                        "passed": outcome == expect or (expect.startswith("rejected") and outcome.startswith("rejected"))})

    attempt("valid package, offline bundle", "accepted", adas.hardware_id, False)
    attempt("tampered engine bytes", "rejected", adas.hardware_id, True)
    attempt("wrong hardware id", "rejected", adas.hardware_id + "-OTHER", False)
    return results


def write(home: HomeLayout, doc: dict, registry, out_root: Path | None = None) -> Path:
    """Write the dossier folder (copies, HTML, signed index), log its digest in the audit log, save the proof."""
    store = open_store(home)
    lineage_nodes = doc["lineage"]["nodes"]
    body = json.dumps(doc, indent=1, sort_keys=True, default=str).encode()
    digest = sha256_bytes(body)
    out_root = out_root or home.root / "dossiers" / doc["cohort"]
    folder = out_root / f"{doc['generated_at'][:19].replace(':', '').replace('-', '')}-{digest[:12]}"
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".dossier-", dir=out_root))
    try:
        (tmp / "artifacts").mkdir()
        artifacts = {}
        for n in lineage_nodes:
            if n["kind"] in COPY_KINDS and n["digest"] and store.has(n["digest"]):
                shutil.copyfile(store.path(n["digest"]), tmp / "artifacts" / n["digest"])
                artifacts[n["digest"]] = {"kind": n["kind"], "label": n["label"],
                                          "sha256": sha256_bytes((tmp / "artifacts" / n["digest"]).read_bytes())}
        (tmp / "dossier.json").write_bytes(body)
        (tmp / "dossier.html").write_text(render_html(doc))
        (tmp / "keys").mkdir()
        signer = _signer(home)
        (tmp / "keys" / "dossier.json").write_text(json.dumps({signer.public_key.keyid: signer.public_key.to_dict()}, indent=1))
        try:
            att_keys = KeyRing(home.root / "ota" / "keys").public_keys(ota_packages.ATTESTATION_ROLE)
        except LookupError:
            att_keys = []
        (tmp / "keys" / "attestation.json").write_text(json.dumps({k.keyid: k.to_dict() for k in att_keys}, indent=1))
        index = {"format": "avops-dossier-index/1", "cohort": doc["cohort"], "dossier_sha256": digest,
                 "html_sha256": sha256_bytes((tmp / "dossier.html").read_bytes()), "artifacts": artifacts,
                 "generated_at": doc["generated_at"]}
        env = Envelope(json.dumps(index, sort_keys=True, separators=(",", ":")).encode(), INDEX_TYPE, {})
        env.sign(signer)
        (tmp / "index.dsse.json").write_text(json.dumps(env.to_dict(), indent=1))
        index_digest = sha256_bytes(env.pae())
        log = getattr(registry, "audit", None)
        (tmp / "audit").mkdir()
        if log is not None:
            receipt = log.append(audit.DOSSIER, f"{doc['cohort']}/{digest[:12]}",
                                 {"cohort": doc["cohort"], "dossier_sha256": digest, "index_pae_sha256": index_digest,
                                  "gates_verdict": doc["gates_verdict"]}, "avops dossier", doc.get("run_id"))
            (tmp / "audit" / "proof.json").write_text(json.dumps(log.prove(receipt.index), indent=1))
            (tmp / "audit" / "log.json").write_text(json.dumps(log.export(), indent=1))
            (tmp / "keys" / "audit.json").write_text(json.dumps({k: v.to_dict() for k, v in log.public_keys().items()}, indent=1))
        tmp.chmod(0o755)  # mkdtemp made it private; a dossier is for auditors to read and copy
        tmp.rename(folder)  # the folder appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(out_root / "latest", folder.name.encode())
    return folder
