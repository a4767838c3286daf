"""Build a cohort's engines from its validated checkpoint, and judge parity, budgets and compatibility.

Everything an engine was built from is named by digest (checkpoint, ONNX, calibration frames),
so each hardware-specific artifact stays traceable to its float32 original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from avops import datasets
from avops.audit import log as audit
from avops.compile import backends
from avops.compile.export import export_onnx, opset_of
from avops.compile.socs import Soc
from avops.fleet_registry import Cohort
from avops.home import HomeLayout
from avops.registry import ModelRegistry, ModelVersion
from avops.store import sha256_bytes, open_store
from avops.training.checkpoints import Detector, load_checkpoint
from avops.training.data import TrainingSet, load_images, load_training_set
from avops.training.evaluation import evaluate_on
from avops.training.gates import GatePolicy
from avops.training.pipeline import MODEL
from avops.versioning.base import DatasetRepository

ENGINES = "compile/engines"
SIL_ENGINES = "compile/sil_engines"
COMPATIBILITY = "compile/compatibility"
MAINTENANCE_ENGINES = "compile/maintenance_engines"
BMS_ENGINES = "compile/bms_engines"
DMS_ENGINES = "compile/dms_engines"  # driver monitoring (occupant) on the in-cabin ECU
COMPILE_VERSION = "1"
CALIBRATION_SPLIT = "val"  # the curated set's calibration split: never train, never test


def validated_version(registry: ModelRegistry, cohort: str) -> ModelVersion:
    """The newest validated (or released) checkpoint of the cohort: only those may be compiled."""
    versions = [v for v in registry.list(MODEL, cohort=cohort) if v.stage in ("validated", "released")]
    if not versions:
        raise LookupError(f"{cohort} has no validated {MODEL} checkpoint: its safety gates must pass first (training/validated_models)")
    return max(versions, key=lambda v: v.version)


def calibration_frames(data: TrainingSet) -> pd.DataFrame:
    return data.split(CALIBRATION_SPLIT)


def calibration_leakage(data: TrainingSet, calibration: pd.DataFrame) -> list[str]:
    """Drives the calibration frames share with the test split (must be none)."""
    return sorted(set(calibration["drive_id"]) & set(data.split("test")["drive_id"]))


def precisions_for(soc: Soc) -> list[str]:
    if soc.toolchain == "onnxruntime":
        return [p for p in ("fp32", "int8") if p in soc.precisions]
    if soc.toolchain == "tensorrt":
        return [p for p in ("fp16", "int8") if p in soc.precisions]
    return list(soc.precisions)


def component_target(cohort: Cohort, ecu_name: str, socs: dict[str, Soc], missing: type[Exception], where: str):
    """The ECU that runs a component (maintenance, battery, occupant) in this cohort's vehicles and its SoC.

    ``missing`` is the component's "nothing to ship" error (a cohort without that ECU gets an empty engine set);
    ``where`` names the setting that chose the ECU, for the message. An ECU naming an unknown SoC is an error."""
    ecu = cohort.ecu(ecu_name)
    if ecu is None:
        raise missing(f"cohort {cohort.id} has no {ecu_name!r} ECU in the fleet registry: add it (with its soc) or set {where}")
    soc_id = cohort.soc_of(ecu.name)
    if soc_id is None or soc_id not in socs:
        raise LookupError(f"{cohort.id}'s {ecu.name} ECU names SoC {soc_id!r}, which is not in config/socs.yaml: "
                          "give the ECU a `soc:` from the catalog")
    return ecu, socs[soc_id]


def ensure_buildable(soc: Soc) -> None:
    """Fail fast, before any work, when this host cannot run the SoC's toolchain."""
    if soc.toolchain == "onnxruntime":
        return
    if soc.toolchain == "tensorrt":
        ok, why = backends.tensorrt_status()
        if not ok:
            raise backends.ToolchainUnavailable(f"{soc.id}: {why}")
        return
    raise backends.ToolchainUnavailable(f"{soc.id}: toolchain {soc.toolchain} cannot run on this host (vendor SDK, not redistributable); "
                                        "build on the vendor's toolchain machine and register the engine with its provenance")


def parity(policy: GatePolicy, reference, engine_eval) -> dict:
    """Per gate slice: the FP32 checkpoint's metric, the engine's, and whether the drop is within policy."""
    ref = reference.slices.set_index("slice")
    eng = engine_eval.slices.set_index("slice")
    rows, ok = {}, True
    for g in policy.gates:
        name = g.slice.name
        a, b = float(ref.loc[name, g.metric]), float(eng.loc[name, g.metric])
        drop = None if math.isnan(a) or math.isnan(b) else a - b
        n = int(ref.loc[name, "objects"])
        judged = drop is not None and n >= g.min_samples  # as for the gates: a handful of objects is not evidence
        passed = not judged or drop <= policy.engine_max_drop + 1e-12
        ok &= passed
        rows[name] = {"metric": g.metric, "fp32": None if math.isnan(a) else a, "engine": None if math.isnan(b) else b,
                      "drop": drop, "max_drop": policy.engine_max_drop, "objects": n, "min_samples": g.min_samples,
                      "judged": judged, "passed": passed}
    return {"passed": ok, "slices": rows}


def budget(soc: Soc, measured: dict, size_bytes: int) -> dict:
    scaling = soc.host_scaling
    if scaling is None:
        return {"passed": False, "reason": f"{soc.id} has no host_scaling: latency must be measured on the target"}
    lat = measured["latency_ms_median"] * scaling
    mem = max(measured["peak_memory_mb"], size_bytes / 2**20)
    return {"passed": lat <= soc.latency_budget_ms and mem <= soc.memory_budget_mb,
            "latency_ms_host": round(measured["latency_ms_median"], 3), "latency_ms_target_estimate": round(lat, 3),
            "latency_budget_ms": soc.latency_budget_ms, "peak_memory_mb": round(mem, 2), "memory_budget_mb": soc.memory_budget_mb,
            "measured_on": f"this x86 host as a stand-in for {soc.id}, latency scaled x{scaling} (host_scaling in config/socs.yaml)",
            "threads": measured["threads"]}


def build_engines(home: HomeLayout, repo: DatasetRepository, registry: ModelRegistry, cohort: Cohort, soc: Soc,
                  policy: GatePolicy, version: ModelVersion | None = None, weights_override: bytes | None = None,
                  measure_runs: int = 60, key: str = ENGINES) -> tuple[datasets.Manifest, list[dict]]:
    """Export, build every precision the SoC runs, check parity and budgets; publish the engine records.

    ``weights_override`` builds from other weights than the checkpoint's (planted-fault tests); the
    records still name the checkpoint, which is exactly what parity must catch.
    """
    ensure_buildable(soc)
    store = open_store(home)
    version = version or validated_version(registry, cohort.id)
    model = load_checkpoint(store, version.artifact_sha256)
    data = load_training_set(repo, version.lineage["dataset_commit"], cohort.id)
    opset = soc.opset[1] if soc.toolchain == "onnxruntime" else min(soc.opset[1], 17)
    onnx_bytes = export_onnx(Detector.from_bytes(weights_override) if weights_override is not None else model, opset)
    onnx_digest = store.put_bytes(onnx_bytes)
    calib = calibration_frames(data)
    leaks = calibration_leakage(data, calib)
    if leaks:
        raise ValueError(f"calibration split of {cohort.id}@{data.commit_id[:12]} shares drives with the test split: {leaks}")
    calib_digest = sha256_bytes("\n".join(sorted(calib["object_sha256"])).encode())
    calib_images = load_images(store, list(calib["object_sha256"])).astype("float32")
    test_images = load_images(store, list(data.split("test")["object_sha256"]))  # one decode for the reference and every engine
    reference = evaluate_on(model, store, data, policy, images=test_images)
    built: list[backends.Engine] = []
    for precision in precisions_for(soc):
        if soc.toolchain == "onnxruntime":
            built.append(backends.build_ort_fp32(onnx_bytes, soc.id) if precision == "fp32" else
                         backends.build_ort_int8(onnx_bytes, soc.id, calib_images, calib_digest))
        else:
            qdq = backends.build_ort_int8(onnx_bytes, soc.id, calib_images, calib_digest).data if precision == "int8" else None
            built.append(backends.build_tensorrt(onnx_bytes, soc.id, precision, soc.toolchain_version(cohort.model_year), qdq))
    records = []
    for e in built:
        digest = store.put_bytes(e.data)
        rec = {"component": MODEL, "cohort": cohort.id, "soc": soc.id, "precision": e.precision, "toolchain": e.toolchain,
               "toolchain_version": e.toolchain_version, "runtime": e.runtime, "engine_sha256": digest, "engine_bytes": len(e.data),
               "source_onnx_sha256": onnx_digest, "opset": opset_of(onnx_bytes), "source_checkpoint_sha256": version.artifact_sha256,
               "model_version": version.version, "dataset_commit": data.commit_id, "build_flags": e.build_flags,
               "calibration_sha256": e.calibration_sha256, "calibration_split": CALIBRATION_SPLIT if e.calibration_sha256 else None,
               "calibration_frames": int(len(calib)) if e.calibration_sha256 else 0, "deterministic": e.deterministic,
               "notes": e.notes, "target": soc.spec(), "ecus": [{"name": x.name, "hardware_id": x.hardware_id, "firmware": x.firmware}
                                                                 for x in cohort.ecus if x.name == "adas_domain"],
               "vehicle_runtime": f"{soc.toolchain} {soc.toolchain_version(cohort.model_year)}", "compile_version": COMPILE_VERSION}
        if e.runtime == "onnxruntime":
            runner = backends.OrtEngineDetector(e.data)
            rec["parity"] = parity(policy, reference, evaluate_on(runner, store, data, policy, images=test_images))
            rec["budget"] = budget(soc, backends.measure(e.data, measure_runs), len(e.data))
        else:  # TensorRT engines are checked on the GPU host that built them (not reachable from here)
            rec["parity"] = {"passed": False, "reason": "parity must run on the GPU executor"}
            rec["budget"] = {"passed": False, "reason": "latency must be measured on the GPU executor"}
        rec["status"] = "ok" if rec["parity"]["passed"] and rec["budget"]["passed"] else "blocked"
        records.append(rec)
    m = publish_engines(home, registry, key, cohort.id, soc.id, records, version, onnx_digest, f"{cohort.id}/{soc.id}")
    return m, records


ENGINE_SUMMARY = ("precision", "engine_sha256", "status", "toolchain", "toolchain_version")


def publish_engines(home: HomeLayout, registry: ModelRegistry, key: str, cohort: str, soc: str, records: list[dict], version,
                    onnx_digest: str, subject: str, extra: dict | None = None) -> datasets.Manifest:
    """Publish a target's engine records (the manifest compatibility and packaging read) and log the build."""
    table = pd.DataFrame([{k: r[k] for k in ENGINE_SUMMARY} for r in records])
    m = datasets.publish(open_store(home), home.refs, key, cohort, {"engines": pa.Table.from_pandas(table, preserve_index=False)},
                         {"engines": records, "source_onnx_sha256": onnx_digest, "model_version": version.version,
                          "source_checkpoint_sha256": version.artifact_sha256, "soc": soc, **(extra or {})})
    audit.record(registry, audit.ENGINE_BUILD, subject,
                 {"cohort": cohort, "soc": soc, "key": key, "manifest_sha256": m.digest, "model_version": version.version,
                  "source_checkpoint_sha256": version.artifact_sha256, "source_onnx_sha256": onnx_digest,
                  "engines": [{k: r[k] for k in ENGINE_SUMMARY} for r in records]}, "avops compile")
    return m


def publish_skipped(home: HomeLayout, key: str, cohort: str, reason: str) -> datasets.Manifest:
    """Nothing to build on purpose (no production model, no ECU to run it): an explicit, empty engine set, so the
    package ships without the component and says why."""
    return datasets.publish(open_store(home), home.refs, key, cohort, {"engines": pa.table({"precision": pa.array([], pa.string())})},
                            {"engines": [], "skipped": reason})


@dataclass
class Shippable:
    """What a parity or budget check concludes over one target's engines."""
    passed: bool
    kept: list[str]
    excluded: dict[str, object]
    description: str


def shippable(records: list[dict], aspect: str) -> Shippable:
    """Engines that pass ``aspect`` (parity or budget); the check holds while at least one does.

    A failing INT8 engine does not stop an FP32 engine that meets every gate from shipping: the
    compatibility matrix rules the failing one out, and this verdict names it.
    """
    kept, excluded = [], {}
    for r in records:
        name = f"{r['precision']}:{r['engine_sha256'][:12]}"
        res = r[aspect]
        if res["passed"]:
            kept.append(name)
        else:
            excluded[name] = {k: v for k, v in res.get("slices", {}).items() if not v["passed"]} or res.get("reason") or res
    if not kept:
        return Shippable(False, kept, excluded, f"no engine passes {aspect}: {', '.join(excluded) or 'none built'}")
    note = f"; excluded (not packaged): {', '.join(excluded)}" if excluded else ""
    return Shippable(True, kept, excluded, f"{', '.join(kept)} pass {aspect}{note}")


def all_engines(home: HomeLayout, cohorts: list[str]) -> list[dict]:
    """The current engines of every cohort (vehicle targets and SIL)."""
    store = open_store(home)
    out = []
    for key in (ENGINES, SIL_ENGINES, MAINTENANCE_ENGINES, BMS_ENGINES, DMS_ENGINES):
        for c in cohorts:
            m = datasets.current(store, home.refs, key, c)
            if m is not None:
                out += m.body["engines"]
    return out


def publish_compatibility(home: HomeLayout, cohort: Cohort, cohorts: list[str], socs: dict[str, Soc]) -> tuple[datasets.Manifest, pd.DataFrame]:
    rows = compatibility_rows(all_engines(home, cohorts), cohort, socs)
    m = datasets.publish(open_store(home), home.refs, COMPATIBILITY, cohort.id,
                         {"matrix": pa.Table.from_pandas(rows, preserve_index=False)}, {"cohort": cohort.id})
    return m, rows


def engine_ecu(engine: dict) -> str:
    """The ECU an engine is built for (perception: the ADAS domain controller)."""
    return (engine.get("ecus") or [{"name": "adas_domain"}])[0]["name"]


def compatibility(engine: dict, cohort: Cohort, socs: dict[str, Soc]) -> tuple[bool, str]:
    """Can this cohort's vehicles run this engine? Reasons name the first thing that rules it out."""
    ecu = engine_ecu(engine)
    if cohort.ecu(ecu) is None:
        return False, f"{cohort.id} vehicles have no {ecu} ECU"
    soc_id = cohort.soc_of(ecu)
    soc = socs.get(soc_id) if soc_id else None
    if soc is None:
        return False, f"{cohort.id}'s {ecu} SoC {soc_id!r} is not in the SoC catalog"
    if engine["status"] != "ok":
        return False, "engine is blocked by its parity or budget check"
    if engine["soc"] != soc_id:
        where = "" if ecu == "adas_domain" else f" on their {ecu}"
        return False, f"built for {engine['soc']}, vehicles have {soc_id}{where}"
    if engine["precision"] not in soc.precisions:
        return False, f"{soc.id} cannot execute {engine['precision']} (supports {', '.join(soc.precisions)})"
    lo, hi = soc.opset
    if not lo <= engine["opset"] <= hi:
        return False, f"ONNX opset {engine['opset']} outside {soc.id}'s range {lo}-{hi}"
    runtime = soc.toolchain_version(cohort.model_year)
    if engine["toolchain"] == "tensorrt" and engine["toolchain_version"] != runtime:
        return False, f"TensorRT {engine['toolchain_version']} engine; MY{cohort.model_year} vehicles run TensorRT {runtime}"
    if engine["toolchain"] != soc.toolchain:
        return False, f"{engine['toolchain']} engine; {soc.id} runs {soc.toolchain}"
    return True, f"{soc.id} MY{cohort.model_year}: {soc.toolchain} {runtime}, {engine['precision']}, opset {engine['opset']}"


def compatibility_rows(engines: list[dict], cohort: Cohort, socs: dict[str, Soc]) -> pd.DataFrame:
    adas = next((e for e in cohort.ecus if e.name == "adas_domain"), None)
    rows = []
    for e in engines:
        ok, why = compatibility(e, cohort, socs)
        ecu, soc_id = cohort.ecu(engine_ecu(e)), cohort.soc_of(engine_ecu(e))
        rows.append({"engine_sha256": e["engine_sha256"], "component": e["component"], "built_for": e["cohort"], "soc": e["soc"],
                     "precision": e["precision"], "toolchain": f"{e['toolchain']} {e['toolchain_version']}", "cohort": cohort.id,
                     "model_year": cohort.model_year, "ecu": engine_ecu(e), "ecu_hardware_id": ecu.hardware_id if ecu else None,
                     "ecu_firmware": ecu.firmware if ecu else None,
                     "vehicle_runtime": f"{socs[soc_id].toolchain} {socs[soc_id].toolchain_version(cohort.model_year)}"
                     if soc_id in socs else None, "compatible": ok, "reason": why})
    for sid, soc in sorted(socs.items()):  # targets this host cannot build at all are listed with the reason
        try:
            ensure_buildable(soc)
        except backends.ToolchainUnavailable as exc:
            rows.append({"engine_sha256": None, "component": MODEL, "built_for": None, "soc": sid, "precision": ",".join(soc.precisions),
                         "toolchain": soc.toolchain, "cohort": cohort.id, "model_year": cohort.model_year, "ecu": "adas_domain",
                         "ecu_hardware_id": adas.hardware_id if adas else None, "ecu_firmware": adas.firmware if adas else None,
                         "vehicle_runtime": None, "compatible": False, "reason": f"not buildable here: {exc}"})
    return pd.DataFrame(rows, columns=["engine_sha256", "component", "built_for", "soc", "precision", "toolchain", "cohort", "model_year", "ecu",
                                       "ecu_hardware_id", "ecu_firmware", "vehicle_runtime", "compatible", "reason"])

