"""``avops dossier verify``: an auditor's offline check of a copied dossier folder.

Nothing here reads the avops home, the registry or the network; only the folder (and keys the
auditor pins, when given). Checked, each failure naming what changed:

1. the DSSE signature over the index (by the dossier key);
2. the sha256 of dossier.json, dossier.html and every copied artifact against the signed index;
3. the chain inside the copies: the attestation's signature and subject name the engine's bytes,
   the provenance describes the checkpoint, the package manifest lists the engine, the ONNX and
   checkpoint digests are the ones the engine record names, and the gate verdict the dossier
   states is the one its copied gate evidence supports;
4. the audit log: the exported log re-verified leaf by leaf and head by head, and the inclusion
   proof of the dossier's log entry, whose recorded digest must be this dossier's.
"""

from __future__ import annotations

import json
from pathlib import Path

from securesystemslib.dsse import Envelope
from securesystemslib.signer import Key

from avops.audit.log import check_proof, verify_export
from avops.ota import packages as ota_packages
from avops.store import sha256_bytes


def _keys(path: Path) -> dict[str, Key]:
    if not path.exists():
        return {}
    return {k: Key.from_dict(k, dict(v)) for k, v in json.loads(path.read_text()).items()}


def verify_folder(folder: Path, trusted_dossier_keys: dict[str, Key] | None = None,
                  trusted_audit_keys: dict[str, Key] | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) for a dossier folder; no problems means every check held."""
    folder = Path(folder)
    problems, notes = [], []
    env_path = folder / "index.dsse.json"
    if not env_path.exists():
        return [f"{env_path}: missing (not a dossier folder, or its signature was removed)"], notes
    env = Envelope.from_dict(json.loads(env_path.read_text()))
    dossier_keys = trusted_dossier_keys or _keys(folder / "keys" / "dossier.json")
    if not trusted_dossier_keys:
        notes.append("dossier signature checked against the key shipped in keys/dossier.json; pin it with --dossier-key")
    try:
        env.verify(list(dossier_keys.values()), 1)
    except Exception as exc:  # noqa: BLE001 - securesystemslib raises several types
        problems.append(f"index.dsse.json: signature does not verify ({exc})")
    index = json.loads(env.payload)
    files = {"dossier.json": index.get("dossier_sha256"), "dossier.html": index.get("html_sha256")}
    for name, digest in files.items():
        p = folder / name
        if not p.exists():
            problems.append(f"{name}: missing")
        elif sha256_bytes(p.read_bytes()) != digest:
            problems.append(f"{name}: changed after signing (sha256 {sha256_bytes(p.read_bytes())[:12]}, signed {str(digest)[:12]})")
    copies: dict[str, bytes] = {}
    for digest, art in index.get("artifacts", {}).items():
        p = folder / "artifacts" / digest
        if not p.exists():
            problems.append(f"artifact {art['kind']} ({art['label']}) {digest[:12]}: missing from artifacts/")
            continue
        data = p.read_bytes()
        if sha256_bytes(data) != digest:
            problems.append(f"artifact {art['kind']} ({art['label']}) {digest[:12]}: its bytes changed (now {sha256_bytes(data)[:12]})")
            continue
        copies[digest] = data
    if not (folder / "dossier.json").exists():
        return problems, notes
    try:
        doc = json.loads((folder / "dossier.json").read_text())
    except ValueError as exc:
        return problems + [f"dossier.json: not valid JSON ({exc})"], notes
    problems += _chain(doc, copies, folder)
    problems += _audit(folder, index, env, trusted_audit_keys, notes)
    return problems, notes


def _chain(doc: dict, copies: dict[str, bytes], folder: Path) -> list[str]:
    out = []
    subj = doc["subject"]
    engine, ckpt, pkg = subj["engine_sha256"], subj["checkpoint_sha256"], subj["package_manifest_sha256"]
    for what, digest in (("engine", engine), ("checkpoint", ckpt), ("package manifest", pkg)):
        if digest is None and what != "checkpoint" and doc.get("no_package"):
            continue  # a dossier of a model that has no package says so; there is no engine to check
        if digest not in copies:
            out.append(f"the {what} {digest[:12]} the dossier names is not among its verified artifacts")
    if pkg in copies:
        body = json.loads(copies[pkg])
        rec = next((e for e in body.get("engines", []) if e["engine_sha256"] == engine), None)
        if rec is None:
            out.append(f"the package manifest does not list engine {engine[:12]}")
        else:
            if rec["source_checkpoint_sha256"] != ckpt:
                out.append(f"the engine record names checkpoint {rec['source_checkpoint_sha256'][:12]}, the dossier {ckpt[:12]}")
            if rec["source_onnx_sha256"] not in copies:
                out.append(f"the ONNX model {rec['source_onnx_sha256'][:12]} the engine was compiled from is not among the artifacts")
    nodes = doc["lineage"]["nodes"]
    # the attestation of the dossier's engine (a package may ship other components, each attested)
    attested = {e["to"] for e in doc["lineage"].get("edges", []) if e["from"] == f"engine:{engine}" and e["relation"] == "attested by"}
    att = next((n for n in nodes if n["kind"] == "attestation" and n["id"] in attested), None)
    if att and engine and att["digest"] in copies and engine in copies:
        keys = list(_keys(folder / "keys" / "attestation.json").values())
        found = ota_packages.verify(json.loads(copies[att["digest"]]), keys, copies[engine], subj["engine"])
        out += [f"attestation {att['digest'][:12]}: {p}" for p in found]
    prov = next((n for n in nodes if n["kind"] == "provenance"), None)
    if prov and prov["digest"] in copies and json.loads(copies[prov["digest"]]).get("weights_sha256") != ckpt:
        out.append(f"provenance {prov['digest'][:12]} does not describe checkpoint {ckpt[:12]}")
    ev_digest = doc["sections"]["gate_results"].get("evidence_sha256")
    if ev_digest:
        if ev_digest not in copies:
            out.append(f"gate evidence {ev_digest[:12]} is not among the verified artifacts")
        else:
            evidence = json.loads(copies[ev_digest])
            failing = [g["gate"] for g in evidence["gates"] if g["status"] != "pass" and g["blocks"]] + \
                [f"incident {i}" for i in evidence.get("incident_regressions", [])]
            supported = "FAILED: " + ", ".join(failing) if failing else "passed"
            if doc["gates_verdict"] != supported:
                out.append(f"the dossier says the gates {doc['gates_verdict']!r}; its gate evidence says {supported!r}")
            stated = {g["gate"]: (g["status"], g["threshold"]) for g in doc["sections"]["gate_results"]["gates"]}
            recorded = {g["gate"]: (g["status"], g["threshold"]) for g in evidence["gates"]}
            for gate in sorted(set(stated) | set(recorded)):
                if stated.get(gate) != recorded.get(gate):
                    out.append(f"gate {gate}: the dossier states {stated.get(gate)}, the evidence recorded {recorded.get(gate)}")
    if not doc["lineage"]["verified"]:
        out += [f"lineage (as generated): {p}" for p in doc["lineage"]["problems"]]
    return out


def _audit(folder: Path, index: dict, env: Envelope, trusted: dict[str, Key] | None, notes: list[str]) -> list[str]:
    out = []
    proof_p, log_p = folder / "audit" / "proof.json", folder / "audit" / "log.json"
    if not proof_p.exists():
        return ["audit/proof.json: missing: the dossier's audit log entry cannot be checked"]
    keys = trusted or _keys(folder / "keys" / "audit.json")
    if not trusted:
        notes.append("audit log heads checked against keys/audit.json; pin them with --audit-key")
    try:
        bundle = json.loads(proof_p.read_text())
    except ValueError as exc:
        return [f"audit/proof.json: not valid JSON ({exc})"]
    out += [f"audit/proof.json: {p}" for p in check_proof(bundle, trusted_keys=keys)]
    data = bundle.get("event", {}).get("data", {})
    if data.get("dossier_sha256") != index.get("dossier_sha256"):
        out.append(f"the audit log entry records dossier {str(data.get('dossier_sha256'))[:12]}, this dossier is "
                   f"{str(index.get('dossier_sha256'))[:12]}")
    if data.get("index_pae_sha256") != sha256_bytes(env.pae()):
        out.append("the audit log entry records another signed index than index.dsse.json")
    if log_p.exists():
        try:
            export = json.loads(log_p.read_text())
        except ValueError as exc:
            return out + [f"audit/log.json: not valid JSON ({exc})"]
        report = verify_export(export, trusted_keys=keys)
        out += [f"audit/log.json: {p}" for p in report.problems]
        head = bundle.get("tree_head", {})
        heads = {h["tree_size"]: h for h in export.get("heads", [])}
        if heads.get(head.get("tree_size")) != head:
            out.append(f"audit/log.json has no signed head of size {head.get('tree_size')} equal to the proof's")
    else:
        notes.append("no audit/log.json in the folder: only the inclusion proof was checked")
    return out
