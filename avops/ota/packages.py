"""OTA packages: the engines a cohort may run, with signed provenance and an SBOM, published through Uptane.

Publishing is gated, in this order: every engine must be allowed for the cohort by the
compatibility matrix and have passed its parity and budget checks; its bytes in the object
store must still hash to the recorded digest; the in-toto/SLSA provenance statement (DSSE-signed)
must verify and name exactly that digest as its subject. Only then are the image repository
and the cohort's director updated.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
from securesystemslib.dsse import Envelope
from securesystemslib.signer import Key

from avops import datasets
from avops.home import HomeLayout
from avops.ota.keys import KeyError_, KeyRing
from avops.compile.pipeline import engine_ecu
from avops.ota.uptane import Release, Uptane, release_log, role_for, target_path
from avops.store import atomic_write_bytes, sha256_bytes, open_store

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://avops.dev/build/compile-engine/v1"
BUILDER_ID = "https://avops.dev/builder/dagster"
ATTESTATION_ROLE = "attestation/builder"
PREFERENCE = ("int8", "fp16", "fp32")  # what a cohort's ECU gets when several precisions are allowed


class PackageRefused(RuntimeError):
    pass


@dataclass
class Package:
    cohort: str
    releases: list[Release]
    engines: list[dict]
    attestations: dict[str, str]  # target path -> attestation sha256
    sboms: dict[str, str]  # target path -> sbom sha256
    rollout_id: str


def select_engines(matrix: pd.DataFrame, engines: list[dict], cohort: str) -> list[dict]:
    """Per component, the cohort's own allowed engine of the most preferred precision (int8, then fp16, then fp32).

    Another cohort's engine may run on these vehicles (the matrix says so), but its model was
    trained and gated on another fleet, with another bus's features: it is never shipped here.
    """
    allowed = set(matrix.loc[matrix["compatible"] & matrix["engine_sha256"].notna(), "engine_sha256"])
    by_component: dict[str, dict] = {}
    for e in engines:
        if e["engine_sha256"] not in allowed or e["status"] != "ok" or e["cohort"] != cohort:
            continue
        best = by_component.get(e["component"])
        if best is None or PREFERENCE.index(e["precision"]) < PREFERENCE.index(best["precision"]):
            by_component[e["component"]] = e
    return [by_component[c] for c in sorted(by_component)]


def engine_name(e: dict) -> str:
    return f"{e['component']}-v{e['model_version']}-{e['precision']}-{e['engine_sha256'][:12]}.onnx"


def provenance(e: dict, path: str, run_id: str, started: datetime) -> dict:
    """An in-toto v1 statement with a SLSA v1 provenance predicate for one engine."""
    deps = [
        {"uri": f"avops:model/{e['component']}/v{e['model_version']}", "digest": {"sha256": e["source_checkpoint_sha256"]}},
        {"uri": f"avops:onnx/{e['component']}/v{e['model_version']}", "digest": {"sha256": e["source_onnx_sha256"]}},
        {"uri": e.get("dataset_uri") or f"avops:dataset/curated-sets@{e['dataset_commit']}", "digest": {"sha256": e["dataset_commit"]}},
    ]
    if e.get("calibration_sha256"):
        deps.append({"uri": f"avops:calibration/{e['calibration_split']}", "digest": {"sha256": e["calibration_sha256"]}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": path, "digest": {"sha256": e["engine_sha256"]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"cohort": e["cohort"], "soc": e["soc"], "precision": e["precision"]},
                "internalParameters": {"toolchain": e["toolchain"], "toolchain_version": e["toolchain_version"],
                                       "build_flags": e["build_flags"], "opset": e["opset"], "compile_version": e["compile_version"]},
                "resolvedDependencies": deps,
            },
            "runDetails": {"builder": {"id": BUILDER_ID}, "metadata": {"invocationId": run_id, "startedOn": started.isoformat()}},
        },
    }


def sign(statement: dict, keys: KeyRing) -> dict:
    env = Envelope(json.dumps(statement, sort_keys=True, separators=(",", ":")).encode(), PAYLOAD_TYPE, {})
    for signer in keys.signers(ATTESTATION_ROLE):
        env.sign(signer)
    return env.to_dict()


def verify(envelope: dict, keys: list[Key], data: bytes, path: str) -> list[str]:
    """Problems with an attestation for ``data`` at ``path`` (empty when it holds)."""
    problems = []
    env = Envelope.from_dict(json.loads(json.dumps(envelope)))  # from_dict edits its argument in place
    try:
        env.verify(keys, 1)
    except Exception as exc:  # noqa: BLE001 - securesystemslib raises several types
        problems.append(f"DSSE signature does not verify: {exc}")
    statement = json.loads(env.payload)
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        problems.append("not an in-toto v1 statement with a SLSA v1 provenance predicate")
    digest = sha256_bytes(data)
    subjects = {(s["name"], s["digest"].get("sha256")) for s in statement.get("subject", [])}
    if (path, digest) not in subjects:
        problems.append(f"attestation subject {sorted(subjects)} does not name {path} with the target's sha256 {digest[:12]}")
    return problems


def sbom(e: dict, cohort: str) -> bytes:
    """A CycloneDX 1.6 SBOM: the engine (a machine-learning model) and the runtime it needs."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    bom = Bom()
    engine = Component(name=engine_name(e), type=ComponentType.MACHINE_LEARNING_MODEL, version=f"v{e['model_version']}",
                       hashes=[HashType(alg=HashAlgorithm.SHA_256, content=e["engine_sha256"])],
                       description=f"{e['component']} for {e['soc']} ({e['precision']}), cohort {cohort}")
    runtime = Component(name=e["toolchain"], type=ComponentType.LIBRARY, version=str(e["toolchain_version"]))
    bom.components.add(engine)
    bom.components.add(runtime)
    bom.metadata.component = engine
    bom.register_dependency(engine, [runtime])
    return JsonV1Dot6(bom).output_as_string(indent=2).encode()


def current_release(ota: Uptane, cohort: str, component: str, ecu: str) -> Release | None:
    """What the cohort's director assigns now to ``ecu`` for ``component`` (None: nothing yet)."""
    for t in ota.assigned(cohort, component, ecu):
        c = t.unrecognized_fields["custom"]
        return Release(t.path, t.hashes["sha256"], t.length, int(c["release_counter"]), str(c.get("rollout_id", "")), ecu,
                       str(c.get("hardware_id", "")))
    return None


def build_and_publish(home: HomeLayout, cohort, matrix: pd.DataFrame, engines: list[dict], run_id: str,
                      now: datetime | None = None) -> Package:
    """Gate, attest, and publish the cohort's package; raises :class:`PackageRefused` with the reason.

    Components are released independently: one whose director entry already carries the chosen
    engine keeps its release (no new counter, no new rollout), so retraining the maintenance model
    never re-rolls an unchanged perception engine, and vice versa.
    """
    now = now or datetime.now(timezone.utc)
    chosen = select_engines(matrix, engines, cohort.id)
    if not chosen:
        reasons = sorted(set(matrix.loc[~matrix["compatible"], "reason"]))[:4]
        raise PackageRefused(f"no engine is allowed for {cohort.id} by the compatibility matrix: {'; '.join(reasons)}")
    store = open_store(home)
    ota = Uptane(home)
    try:
        keys = ota.keys.public_keys(ATTESTATION_ROLE)
    except KeyError_:
        keys = ota.keys.generate(ATTESTATION_ROLE)
    stamp = now.strftime('%Y%m%dT%H%M%S')
    package_id = f"{cohort.id}-{stamp}"
    releases, attestations, sboms, fresh = [], {}, {}, []
    for e in chosen:
        ecu = cohort.ecu(engine_ecu(e))
        if ecu is None:
            raise PackageRefused(f"cohort {cohort.id} has no {engine_ecu(e)} ECU in the fleet registry: nothing to install "
                                 f"{e['component']} on")
        name = engine_name(e)
        path = target_path(e["component"], e["soc"], name)
        kept = current_release(ota, cohort.id, e["component"], ecu.name)
        if kept is not None and kept.path == path and kept.sha256 == e["engine_sha256"]:
            custom = ota.image().targets(role_for(e["component"], e["soc"])).targets[path].unrecognized_fields.get("custom", {})
            releases.append(kept)
            attestations[path], sboms[path] = custom["attestation_sha256"], custom["sbom_sha256"]
            continue
        data = store.get_bytes(e["engine_sha256"], verify=True)
        envelope = sign(provenance(e, path, run_id, now), ota.keys)
        problems = verify(envelope, keys, data, path)
        if problems:
            raise PackageRefused(f"{path}: {'; '.join(problems)}")
        att = json.dumps(envelope, sort_keys=True).encode()
        bom = sbom(e, cohort.id)
        attestations[path], sboms[path] = store.put_bytes(att), store.put_bytes(bom)
        role = ota.ensure_role(e["component"], e["soc"])
        image = ota.image()
        image.add_target(target_path(e["component"], e["soc"], name + ".intoto.json"), att, role=role)
        image.add_target(target_path(e["component"], e["soc"], name + ".cdx.json"), bom, role=role)
        r = ota.release(cohort.id, e["component"], e["soc"], name, data, ecu.name, ecu.hardware_id,
                        f"{cohort.id}-{e['component']}-{stamp}-{e['engine_sha256'][:8]}",
                        image_custom={"attestation_sha256": attestations[path], "sbom_sha256": sboms[path],
                                      "model_version": e["model_version"], "precision": e["precision"]})
        releases.append(r)
        fresh.append((e, r))
    log = release_log(home, cohort.id)
    previous = log.read_bytes() if log.exists() else b""
    lines = b"".join(json.dumps({"at": now.isoformat(), "rollout_id": r.rollout_id, "package_id": package_id, "run_id": run_id,
                                 "component": e["component"], "ecu": r.ecu_identifier, "path": r.path, "sha256": r.sha256,
                                 "length": r.length, "release_counter": r.release_counter, "model_version": e["model_version"],
                                 "kind": "release"}, sort_keys=True).encode() + b"\n"
                     for e, r in fresh)
    if lines:
        atomic_write_bytes(log, previous + lines)
    return Package(cohort.id, releases, chosen, attestations, sboms, package_id)


PACKAGES_KEY = "ota/packages"


def why_no_package(home: HomeLayout, cohort) -> str:
    """Why ``cohort`` has no package: its candidate blocked at the gates, a toolchain this host lacks, or failed engine checks."""
    from avops.compile.backends import ToolchainUnavailable
    from avops.compile.pipeline import ensure_buildable
    from avops.compile.socs import load_catalog
    from avops.training.pipeline import current_evaluation

    try:
        _, ev = current_evaluation(home, cohort.id)
    except LookupError:
        return "no model evaluated yet"
    if ev["blocked"]:
        failing = [g["gate"] for g in ev["gates"] if g["blocks"]] + (["incident replay"] if ev.get("incident_regressions") else [])
        return f"v{ev['candidate']['version']} blocked at the safety gates ({', '.join(failing)})"
    soc = load_catalog().get(cohort.soc)
    if soc is not None:
        try:
            ensure_buildable(soc)
        except ToolchainUnavailable:
            return f"{soc.toolchain} engines need a GPU executor (job compile_engines_gpu)"
    return "no engine passed its parity and budget checks"


def publish_manifest(home: HomeLayout, pkg: Package, matrix_manifest_sha256: str) -> tuple[datasets.Manifest, list[dict]]:
    """The package as a content-addressed manifest (what lineage and the dossier start from)."""
    rows = [{"path": r.path, "ecu": r.ecu_identifier, "rollout_id": r.rollout_id, "sha256": r.sha256, "length": r.length,
             "release_counter": r.release_counter, "attestation_sha256": pkg.attestations[r.path], "sbom_sha256": pkg.sboms[r.path]} for r in pkg.releases]
    m = datasets.publish(open_store(home), home.refs, PACKAGES_KEY, pkg.cohort, {"releases": pa.Table.from_pylist(rows)},
                         {"rollout_id": pkg.rollout_id, "engines": pkg.engines, "matrix_manifest_sha256": matrix_manifest_sha256})
    return m, rows


def attestation_payload(envelope: dict) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))
