"""Verified lineage: from a cohort's OTA package down to the sha256 of every landed drive file.

package -> engine (+ its DSSE/SLSA attestation, SBOM, image-repository target) -> ONNX ->
checkpoint (+ provenance, gate evidence, registry history) -> dataset commit (every file read
by training) -> curated set manifest -> auto-labels -> raw drive partition -> landed files.

Every digest printed is **recomputed** from the stored bytes (object store, dataset version store,
image repository, landing zone) as the graph is built; a mismatch becomes a problem on the node
and in :attr:`Lineage.problems`, never a silently green edge. Bytes that are legitimately gone
(a landed file archived away) are reported as unverifiable, which is different from wrong.

No Dagster here: the ``avops lineage`` command adds the Dagster side (each asset's latest
materialization, whose recorded digest must equal the node's).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from securesystemslib.signer import Key

from avops import datasets
from avops.home import HomeLayout
from avops.ota import packages as ota_packages
from avops.ota.keys import KeyRing
from avops.store import sha256_bytes, sha256_file, open_store

PACKAGES = ota_packages.PACKAGES_KEY


@dataclass
class Node:
    id: str
    kind: str
    label: str
    digest: str | None = None
    verified: bool | None = None  # True: recomputed and equal; False: mismatch; None: nothing to recompute
    detail: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Lineage:
    root: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f"{n.label}: {p}" for n in self.nodes.values() for p in n.problems]

    def add(self, node: Node, parent: str | None = None, relation: str = "") -> Node:
        if node.id in self.nodes:
            existing = self.nodes[node.id]
        else:
            self.nodes[node.id] = existing = node
        if parent is not None and (parent, node.id, relation) not in self.edges:
            self.edges.append((parent, node.id, relation))
        return existing

    def to_dict(self) -> dict:
        return {"format": "avops-lineage/1", "root": self.root, "verified": not self.problems, "problems": self.problems,
                "nodes": [asdict(n) for n in self.nodes.values()],
                "edges": [{"from": a, "to": b, "relation": r} for a, b, r in self.edges]}

    def to_dot(self) -> str:
        colour = {True: "palegreen", False: "salmon", None: "lightgrey"}
        lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
        for n in self.nodes.values():
            digest = f"\\n{n.digest[:12]}" if n.digest else ""
            mark = {True: " ✓", False: " ✗", None: ""}[n.verified]
            lines.append(f'  "{n.id}" [label="{n.kind}\\n{_esc(n.label)}{digest}{mark}", fillcolor={colour[n.verified]}];')
        for a, b, r in self.edges:
            lines.append(f'  "{a}" -> "{b}" [label="{_esc(r)}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


class _Checker:
    def __init__(self, home: HomeLayout, registry, repo) -> None:
        self.home, self.registry, self.repo = home, registry, repo
        self.store = open_store(home)

    def object(self, node: Node, digest: str) -> Node:
        """Recompute ``digest`` from the object store's bytes."""
        node.digest = digest
        try:
            actual = sha256_file(self.store.path(digest))
        except FileNotFoundError:
            node.verified = False
            node.problems.append(f"object {digest[:12]} is missing from the object store")
            return node
        node.verified = actual == digest
        if not node.verified:
            node.problems.append(f"stored bytes hash to {actual[:12]}, not the recorded {digest[:12]} (changed after it was recorded)")
        return node

    def manifest(self, node: Node, digest: str) -> dict | None:
        """Verify the stored JSON and parse it (also when its digest is wrong: the graph goes on, flagged)."""
        self.object(node, digest)
        return json.loads(self.store.path(digest).read_bytes()) if self.store.has(digest) else None


def package_lineage(home: HomeLayout, cohort: str, registry, repo, manifest_digest: str | None = None) -> Lineage:
    """The verified lineage of ``cohort``'s current package (or the package manifest ``manifest_digest``)."""
    ck = _Checker(home, registry, repo)
    lin = Lineage()
    if manifest_digest is None:
        current = datasets.current(ck.store, home.refs, PACKAGES, cohort)
        if current is None:
            raise LookupError(f"{cohort} has no OTA package yet: materialize ota/packages for it (or see why it was refused)")
        manifest_digest = current.digest
    root = lin.add(Node(f"package:{manifest_digest}", "package", f"ota/packages[{cohort}]"))
    lin.root = root.id
    body = ck.manifest(root, manifest_digest)
    if body is None:
        return lin
    root.detail = {"rollout_id": body.get("rollout_id"), "matrix_manifest_sha256": body.get("matrix_manifest_sha256")}
    releases = datasets.read_table(ck.store, datasets.Manifest(manifest_digest, body), "releases").to_pylist()
    engines = {e["engine_sha256"]: e for e in body.get("engines", [])}
    for rel in releases:
        _engine(lin, ck, root.id, rel, engines.get(rel["sha256"]), cohort)
    return lin


def _engine(lin: Lineage, ck: _Checker, parent: str, rel: dict, rec: dict | None, cohort: str) -> None:
    eng = lin.add(ck.object(Node(f"engine:{rel['sha256']}", "engine", rel["path"].rsplit("/", 1)[-1]), rel["sha256"]), parent, "ships")
    image_file = ck.home.root / "ota" / "image" / "targets" / rel["path"].rsplit("/", 1)[0] / f"{rel['sha256']}.{rel['path'].rsplit('/', 1)[1]}"
    if image_file.exists():
        served = sha256_file(image_file)
        eng.detail["image_repository_target"] = str(image_file.relative_to(ck.home.root))
        if served != rel["sha256"]:
            eng.verified = False
            eng.problems.append(f"the image repository serves bytes hashing to {served[:12]} at {rel['path']}")
    else:
        eng.problems.append(f"the image repository has no target file for {rel['path']}")
        eng.verified = False
    att = lin.add(ck.object(Node(f"attestation:{rel['attestation_sha256']}", "attestation", "SLSA v1 provenance (DSSE)"),
                            rel["attestation_sha256"]), eng.id, "attested by")
    if att.verified:
        envelope = json.loads(ck.store.path(rel["attestation_sha256"]).read_bytes())
        keys = _attestation_keys(ck.home)
        data = ck.store.path(rel["sha256"]).read_bytes() if ck.store.has(rel["sha256"]) else b""
        problems = ota_packages.verify(envelope, keys, data, rel["path"]) if keys else ["no builder key on file to check the signature"]
        att.problems += problems
        att.verified = not problems
        att.detail["signed_by"] = [s.get("keyid", "")[:12] for s in envelope.get("signatures", [])]
    lin.add(ck.object(Node(f"sbom:{rel['sbom_sha256']}", "sbom", "CycloneDX 1.6 SBOM"), rel["sbom_sha256"]), eng.id, "described by")
    if rec is None:
        eng.problems.append("the package manifest has no engine record for this target")
        eng.verified = False
        return
    eng.detail.update({k: rec.get(k) for k in ("precision", "soc", "toolchain", "toolchain_version", "model_version", "status")})
    onnx = lin.add(ck.object(Node(f"onnx:{rec['source_onnx_sha256']}", "onnx", f"ONNX (opset {rec.get('opset')})"),
                             rec["source_onnx_sha256"]), eng.id, "compiled from")
    if rec.get("calibration_sha256"):
        lin.add(Node(f"calibration:{rec['calibration_sha256']}", "calibration", f"INT8 calibration: {rec.get('calibration_frames')} "
                     f"frames of the {rec.get('calibration_split')} split", rec["calibration_sha256"], None), eng.id, "calibrated on")
    _checkpoint(lin, ck, onnx.id, rec, cohort)


def _attestation_keys(home: HomeLayout) -> list[Key]:
    try:
        return KeyRing(home.root / "ota" / "keys").public_keys(ota_packages.ATTESTATION_ROLE)
    except LookupError:
        return []


def _checkpoint(lin: Lineage, ck: _Checker, parent: str, rec: dict, cohort: str) -> None:
    digest, version = rec["source_checkpoint_sha256"], int(rec["model_version"])
    node = lin.add(ck.object(Node(f"checkpoint:{digest}", "checkpoint", f"{rec.get('component', 'perception')} v{version}"), digest),
                   parent, "exported from")
    try:
        mv = ck.registry.get(rec.get("component", "perception"), version)
    except Exception as exc:  # noqa: BLE001 - the registry names what is missing
        node.problems.append(f"the model registry has no v{version}: {exc}")
        return
    if mv.artifact_sha256 != digest:
        node.verified = False
        node.problems.append(f"the registry's v{version} is {mv.artifact_sha256[:12]}, the engine names {digest[:12]}")
    node.detail.update({"stage": mv.stage, "cohort": mv.cohort, "created_by": mv.created_by,
                        "history": [f"{e.at[:19]} {e.kind} {e.from_value or ''}->{e.to_value or ''} by {e.actor}: {e.reason[:120]}"
                                    for e in ck.registry.history(mv.name, mv.version)]})
    _gates(lin, ck, node.id, mv)
    if mv.name == "maintenance":
        _maintenance_inputs(lin, ck, node.id, mv.lineage, cohort)
        return
    if mv.name == "battery_soh":
        _battery_inputs(lin, ck, node.id, mv.lineage)
        return
    if mv.name == "occupant_monitoring":
        _federated_inputs(lin, ck, node.id, mv.lineage, cohort)
        return
    prov_digest = mv.lineage.get("provenance_sha256")
    if not prov_digest:
        node.problems.append("no provenance record in the registry lineage")
        return
    prov_node = lin.add(Node(f"provenance:{prov_digest}", "provenance", "training provenance"), node.id, "trained with")
    prov = ck.manifest(prov_node, prov_digest)
    if prov is None:
        return
    if prov.get("weights_sha256") != digest:
        prov_node.verified = False
        prov_node.problems.append(f"provenance describes weights {str(prov.get('weights_sha256'))[:12]}, not {digest[:12]}")
    prov_node.detail = {"seed": prov.get("seed"), "hyperparameters": prov.get("hyperparameters"), "code": prov.get("code"),
                        "libraries": prov.get("libraries")}
    _dataset(lin, ck, prov_node.id, prov.get("dataset", {}), prov.get("cohort", cohort))  # the cohort whose data trained it


def _maintenance_inputs(lin: Lineage, ck: _Checker, parent: str, lineage: dict, cohort: str) -> None:
    """A maintenance model: the feature table it was trained on (down to the landed drive files), the
    workshop export that labelled it, and the drift reference it is monitored against."""
    fm = lineage.get("feature_manifest")
    if fm:
        fnode = lin.add(Node(f"features:{fm}", "feature table", f"features/telemetry[{cohort}]"), parent, "trained on")
        body = ck.manifest(fnode, fm)
        if body is not None:
            fnode.detail = {"feature_versions": body.get("feature_versions"), "catalog_version": body.get("catalog_version")}
            if body.get("raw_manifest"):
                _raw(lin, ck, fnode.id, body["raw_manifest"], cohort)
    if lineage.get("service_orders_sha256"):
        lin.add(Node(f"workshop:{lineage['service_orders_sha256']}", "workshop export", f"workshop/{cohort}/service_orders.csv (labels)",
                     lineage["service_orders_sha256"], None, {"note": "the dealer system's export as read at training time"}),
                parent, "labelled by")
    if lineage.get("reference_sha256"):
        lin.add(ck.object(Node(f"reference:{lineage['reference_sha256']}", "drift reference", "telemetry it was trained on, sorted"),
                          lineage["reference_sha256"]), parent, "monitored against")


def _battery_inputs(lin: Lineage, ck: _Checker, parent: str, lineage: dict) -> None:
    """A battery SoH/RUL model: the feature table of every fleet it was trained on (vehicle and storage),
    each down to the BMS logs it was computed from, and the aging reference it is monitored against."""
    for fleet, fm in sorted((lineage.get("feature_tables") or {}).items()):
        fnode = lin.add(Node(f"features:{fm}", "feature table", f"features/battery_cells[{fleet}]"), parent, "trained on")
        body = ck.manifest(fnode, fm)
        if body is None:
            continue
        fnode.detail = {"feature_version": body.get("feature_version"), "embedding_digest": body.get("embedding_digest")}
        raw = body.get("raw_manifest")
        if raw:
            rnode = lin.add(Node(f"bms:{raw}", "BMS reference tests", f"battery/reference_tests[{fleet}]"), fnode.id, "from")
            rbody = ck.manifest(rnode, raw)
            if rbody is None:
                continue
            rnode.detail = {"tests": len(rbody.get("inputs", [])), "quarantined": len(rbody.get("quarantined", []))}
            for item in rbody.get("inputs", []):
                _landed(lin, rnode.id, item, ck.home.bms, "BMS log", "the BMS landing folder")
    if lineage.get("aging_reference_sha256"):
        lin.add(ck.object(Node(f"aging:{lineage['aging_reference_sha256']}", "drift reference", "expected aging trajectories"),
                          lineage["aging_reference_sha256"]), parent, "monitored against")


def _federated_inputs(lin: Lineage, ck: _Checker, parent: str, lineage: dict, cohort: str) -> None:
    """A federated model: its rounds back to the studio model, each with the digests of the updates the
    vehicles sent and its no-upload audit; no cabin frame of a fleet vehicle appears (none reached the cloud)."""
    rounds = lineage.get("rounds") or {}
    child, studio = parent, None
    for rnd in sorted(rounds, reverse=True):
        rnode = lin.add(Node(f"round:{rounds[rnd]}", "federated round", f"federated/rounds[{cohort}|{rnd}]"), child,
                        "aggregated in" if child == parent else "continues")
        body = ck.manifest(rnode, rounds[rnd])
        if body is None:
            return
        rnode.detail = {"partition": f"{cohort}|{rnd}", "participants": len(body.get("participants", [])), "dropped": len(body.get("dropped", {})),
                        "epsilon_max": body.get("epsilon_max"), "delta": body.get("dp", {}).get("delta"),
                        "audit_passed": body.get("audit", {}).get("passed")}
        if not body.get("audit", {}).get("passed", False):
            rnode.problems.append("this round failed its no-upload audit")
        for v, d in sorted(body.get("update_digests", {}).items()):
            lin.add(ck.object(Node(f"update:{d}", "model update", f"update from vehicle {v} (pseudonym)"), d), rnode.id, "from")
        lin.add(ck.object(Node(f"uplink:{body['uplink_log_sha256']}", "uplink log", "every byte the vehicles sent, by digest"),
                          body["uplink_log_sha256"]), rnode.id, "logged in")
        child = rnode.id
        studio = body.get("initial_sha256")  # the oldest round's start: the studio model
    if rounds and studio:
        snode = lin.add(ck.object(Node(f"weights:{studio}", "studio model", "studio model (consented studio sessions)"), studio), child, "started from")
        snode.detail = {"note": "trained centrally on consented studio recordings (occupant/studio_model)"}
    if lineage.get("eval_manifest"):
        enode = lin.add(Node(f"consented:{lineage['eval_manifest']}", "consented sessions", f"occupant/consented_sessions[{cohort}]"),
                        parent, "judged on")
        ck.manifest(enode, lineage["eval_manifest"])


def _gates(lin: Lineage, ck: _Checker, parent: str, mv) -> None:
    audit = getattr(ck.registry, "audit", None)
    events = [e for e in audit.events(kind="gate_result", subject=f"{mv.name}/v{mv.version}")] if audit is not None else []
    if not events:
        return
    for e in events:
        data = json.loads(e.entry)["data"]
        passed = sum(g["status"] == "pass" for g in data["gates"])
        label = f"{'BLOCKED' if data['blocked'] else 'passed'}: {passed}/{len(data['gates'])} gates pass"
        node = lin.add(ck.object(Node(f"gates:{data['evidence_sha256']}", "gate result", label), data["evidence_sha256"]), parent, "gated by")
        node.detail = {"audit_event": e.index, "gates": data["gates"], "incident_regressions": data.get("incident_regressions"),
                       "policy_sha256": data.get("policy_sha256")}
        if node.verified:
            evidence = json.loads(ck.store.path(data["evidence_sha256"]).read_bytes())
            recorded = {g["gate"]: (g["status"], g["threshold"]) for g in evidence["gates"]}
            logged = {g["gate"]: (g["status"], g["threshold"]) for g in data["gates"]}
            if recorded != logged:
                node.verified = False
                node.problems.append("the gate evidence no longer says what the audit log recorded (thresholds or verdicts changed)")


def _dataset(lin: Lineage, ck: _Checker, parent: str, dataset: dict, cohort: str) -> None:
    commit = dataset.get("commit_id")
    if not commit:
        return
    node = lin.add(Node(f"dataset:{commit}", "dataset commit", f"curated-sets@{commit[:12]}", commit), parent, "read")
    files = dataset.get("files_read", {})
    bad = []
    for path, digest in sorted(files.items()):
        try:
            actual = sha256_bytes(ck.repo.get(commit, path))
        except Exception as exc:  # noqa: BLE001 - a missing file or commit is a finding, not a crash
            bad.append(f"{path}: cannot be read at {commit[:12]} ({exc})")
            continue
        if actual != digest:
            bad.append(f"{path}: hashes to {actual[:12]} at {commit[:12]}, training read {digest[:12]}")
    node.verified = not bad if files else None
    node.problems += bad
    node.detail = {"files_read": len(files)}
    manifest_path = f"cohorts/{cohort}/manifest.json"
    try:
        cur = json.loads(ck.repo.get(commit, manifest_path))
    except Exception as exc:  # noqa: BLE001
        node.problems.append(f"no curated set manifest at {manifest_path}: {exc}")
        return
    cur_node = lin.add(Node(f"curated:{commit}:{cohort}", "curated set", f"{cohort}: {cur.get('splits')}",
                            sha256_bytes(ck.repo.get(commit, manifest_path)), True,
                            {"label_version": cur.get("label_version"), "coverage": cur.get("coverage")}), node.id, "contains")
    labels_digest = cur.get("source", {}).get("auto_labels")
    if labels_digest:
        al_node = lin.add(Node(f"auto_labels:{labels_digest}", "auto-labels", f"curation/auto_labels[{cohort}]"), cur_node.id, "labeled by")
        al = ck.manifest(al_node, labels_digest)
        if al is not None:
            al_node.detail = {"teacher_sha256": al.get("teacher_sha256"), "label_version": al.get("label_version")}
            if al.get("teacher_sha256"):
                lin.add(ck.object(Node(f"teacher:{al['teacher_sha256']}", "teacher", "auto-labeling teacher"), al["teacher_sha256"]),
                        al_node.id, "predicted by")
            if al.get("source_manifest"):
                _raw(lin, ck, al_node.id, al["source_manifest"], cohort)


def _landed(lin: Lineage, parent: str, item: dict, root: Path, kind: str, where: str) -> Node:
    """A delivered file ingest read: its digest recomputed where it still lies (verified), or shown as recorded."""
    f = lin.add(Node(f"file:{item['sha256']}", kind, item["file"].rsplit("/", 1)[-1], item["sha256"]), parent, "ingested")
    path = root / item["file"]
    if not path.exists():
        f.verified = None
        f.detail["note"] = f"not in {where} any more ({Path(item['file'])}): recorded digest shown, not recomputed"
        return f
    actual = sha256_file(path)
    f.verified = actual == item["sha256"]
    if not f.verified:
        f.problems.append(f"{item['file']} now hashes to {actual[:12]}, ingest recorded {item['sha256'][:12]}")
    return f


def _raw(lin: Lineage, ck: _Checker, parent: str, digest: str, cohort: str) -> None:
    node = lin.add(Node(f"raw:{digest}", "raw drives", f"ingest/raw_drives[{cohort}]"), parent, "from")
    body = ck.manifest(node, digest)
    if body is None:
        return
    inputs = body.get("inputs", [])
    node.detail = {"drives": len(inputs), "quarantined": len(body.get("quarantined", []))}
    for item in inputs:
        f = _landed(lin, node.id, item, ck.home.landing, "landed file", "the landing zone")
        f.detail["format"] = item.get("format")
