"""The production SoH/RUL model of a cohort's chemistry as an INT8 engine for the cohort's BMS.

The BMS computes the features after each reference test (``avops.battery.bms_reference``, checked
against the golden vectors) and feeds one row into this graph: training-mean imputation,
standardisation and both linear models in one MatMul, quantised to INT8 (QDQ) with calibration
on the training rows. Parity is the model's own: SoH and RUL of the engine against the float64
checkpoint on every training row; the budget is the MCU's: the engine's bytes and its largest
activations against the memory budget, latency scaled from this host.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from avops import datasets
from avops.battery.config import BatteryConfig
from avops.battery.model import TARGETS, LinearModel
from avops.battery.pipeline import MODEL, NoBatteryData, load_checkpoint, production, training_rows
from avops.compile import backends
from avops.compile.export import opset_of
from avops.compile.pipeline import BMS_ENGINES, COMPILE_VERSION, component_target, ensure_buildable, publish_engines
from avops.compile.pipeline import publish_skipped as compile_publish_skipped
from avops.compile.socs import Soc
from avops.fleet_registry import Cohort
from avops.home import HomeLayout
from avops.registry import ModelRegistry
from avops.store import open_store

INPUT = "features"
OPSET = 17


class NothingToShip(LookupError):
    """No production battery model for the cohort's chemistry, or no battery fleet / BMS ECU to run it."""


def export_onnx(models: dict[str, LinearModel], meta: dict) -> bytes:
    """ONNX: input ``features`` float32 [batch, k]; outputs ``soh`` and ``rul_cycles`` [batch]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    first = models[TARGETS[0]]
    for m in models.values():
        if m.features != first.features or m.mean != first.mean or m.scale != first.scale:
            raise ValueError("the SoH and RUL models must share their inputs and standardisation to share one graph")
    k = len(first.features)
    inits = [numpy_helper.from_array(np.asarray(first.mean, np.float32), "mean"),
             numpy_helper.from_array(np.asarray(first.scale, np.float32), "scale"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    nodes = [
        helper.make_node("IsNaN", [INPUT], ["nan"]), helper.make_node("IsInf", [INPUT], ["inf"]),
        helper.make_node("Or", ["nan", "inf"], ["missing"]),
        helper.make_node("Where", ["missing", "mean", INPUT], ["filled"]),
        helper.make_node("Sub", ["filled", "mean"], ["centred"]), helper.make_node("Div", ["centred", "scale"], ["z"]),
    ]
    for t in TARGETS:  # one MatMul per output: INT8 gives each its own scale (SoH ~1, RUL ~100s of cycles)
        inits += [numpy_helper.from_array(np.asarray(models[t].coef, np.float32).reshape(-1, 1), f"{t}_w"),
                  numpy_helper.from_array(np.asarray([models[t].intercept], np.float32), f"{t}_b")]
        nodes += [helper.make_node("MatMul", ["z", f"{t}_w"], [f"{t}_lin"]), helper.make_node("Add", [f"{t}_lin", f"{t}_b"], [f"{t}_col"]),
                  helper.make_node("Squeeze", [f"{t}_col", "axes"], [t])]
    graph = helper.make_graph(nodes, "avops_battery_soh", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", k])],
                              [helper.make_tensor_value_info("soh", TensorProto.FLOAT, ["batch"]),
                               helper.make_tensor_value_info("rul_cycles", TensorProto.FLOAT, ["batch"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8, producer_name="avops")
    for key, v in {"features": json.dumps(first.features), "outputs": json.dumps(list(TARGETS)), **meta}.items():
        model.metadata_props.add(key=key, value=str(v))
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def run(engine: bytes, X: np.ndarray) -> dict[str, np.ndarray]:
    sess = backends.session(engine)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {INPUT: np.asarray(X, np.float32)})))


def parity(models: dict[str, LinearModel], engine: bytes, X: pd.DataFrame, max_soh: float, max_rul: float) -> dict:
    out = run(engine, X.reindex(columns=models[TARGETS[0]].features).to_numpy(np.float32))
    rows, ok = {}, True
    for target, limit in (("soh", max_soh), ("rul_cycles", max_rul)):
        diff = np.abs(out[target].astype(np.float64) - models[target].predict(X))
        worst = float(diff.max()) if diff.size else 0.0
        passed = bool(worst <= limit)
        ok &= passed
        rows[target] = {"max_abs_diff": worst, "p95_abs_diff": float(np.quantile(diff, 0.95)) if diff.size else 0.0,
                        "max": limit, "rows": int(len(X)), "passed": passed}
    return {"passed": ok, "targets": rows}


def mcu_budget(soc: Soc, measured: dict, engine: bytes, inputs: int) -> dict:
    """An MCU runs the engine from flash with a static arena: its bytes plus its activations, not a host process's RSS."""
    activations = 4 * (inputs * 4 + 2 * 2)  # float32 input, its imputed/centred/scaled copies, the two outputs
    mem_mb = (len(engine) + activations) / 2**20
    lat = measured["latency_ms_median"] * (soc.host_scaling or float("nan"))
    passed = soc.host_scaling is not None and lat <= soc.latency_budget_ms and mem_mb <= soc.memory_budget_mb
    return {"passed": bool(passed), "engine_bytes": len(engine), "activation_bytes": activations, "memory_mb": round(mem_mb, 5),
            "memory_budget_mb": soc.memory_budget_mb, "latency_ms_host": round(measured["latency_ms_median"], 4),
            "latency_ms_target_estimate": round(lat, 3), "latency_budget_ms": soc.latency_budget_ms,
            "measured_on": f"this x86 host as a stand-in for {soc.id}, latency scaled x{soc.host_scaling} (host_scaling in config/socs.yaml)"}


def build_engines(home: HomeLayout, registry: ModelRegistry, cohort: Cohort, config: BatteryConfig, socs: dict[str, Soc],
                  measure_runs: int = 200) -> tuple[datasets.Manifest, list[dict]]:
    """Build the production model of the cohort's chemistry for its BMS; :class:`NothingToShip` when there is none."""
    store = open_store(home)
    if cohort.id not in config.fleets or config.fleet(cohort.id).kind != "vehicle":
        raise NothingToShip(f"cohort {cohort.id} is not a vehicle fleet in {config.path}: no battery model ships to it")
    chemistry = config.fleet(cohort.id).chemistry
    version = production(registry, chemistry)
    if version is None:
        raise NothingToShip(f"no production {MODEL} model for chemistry {chemistry} (none passed its gates yet): nothing to compile")
    ecu, soc = component_target(cohort, config.model.ecu, socs, NothingToShip, "battery.yaml's model.ecu")
    ensure_buildable(soc)
    body, models = load_checkpoint(store, version.artifact_sha256)
    try:
        X, _, manifests = training_rows(home, config, chemistry, store)
    except NoBatteryData as e:
        raise NothingToShip(str(e)) from None
    onnx_bytes = export_onnx(models, {"model_version": version.version, "chemistry": chemistry, "checkpoint_sha256": version.artifact_sha256})
    onnx_digest = store.put_bytes(onnx_bytes)
    calib = X.reindex(columns=models[TARGETS[0]].features).to_numpy(np.float32)
    calib_sha = store.put_bytes(calib.tobytes())
    records = []
    for precision in [p for p in ("int8", "fp32") if p in soc.precisions][:1]:
        e = (backends.build_ort_int8(onnx_bytes, soc.id, calib, calib_sha, input_name=INPUT, op_types=("MatMul", "Gemm"))
             if precision == "int8" else backends.build_ort_fp32(onnx_bytes, soc.id))
        digest = store.put_bytes(e.data)
        rec = {"component": MODEL, "cohort": cohort.id, "soc": soc.id, "precision": precision, "toolchain": e.toolchain,
               "toolchain_version": e.toolchain_version, "runtime": e.runtime, "engine_sha256": digest, "engine_bytes": len(e.data),
               "source_onnx_sha256": onnx_digest, "opset": opset_of(onnx_bytes), "source_checkpoint_sha256": version.artifact_sha256,
               "model_version": version.version, "chemistry": chemistry,
               "dataset_commit": body["feature_version"], "dataset_uri": f"avops:features/battery_cells@{json.dumps(manifests, sort_keys=True)}",
               "build_flags": e.build_flags, "calibration_sha256": calib_sha if precision == "int8" else None,
               "calibration_split": "training rows" if precision == "int8" else None,
               "calibration_frames": int(len(calib)) if precision == "int8" else 0,
               "deterministic": e.deterministic, "notes": e.notes, "target": soc.spec(),
               "ecus": [{"name": ecu.name, "hardware_id": ecu.hardware_id, "firmware": ecu.firmware}],
               "vehicle_runtime": f"{soc.toolchain} {soc.toolchain_version(cohort.model_year)}", "compile_version": COMPILE_VERSION,
               "inputs": models[TARGETS[0]].features, "feature_version": body["feature_version"]}
        rec["parity"] = parity(models, e.data, X, config.model.parity_max_soh, config.model.parity_max_rul_cycles)
        rec["budget"] = mcu_budget(soc, backends.measure(e.data, measure_runs), e.data, len(models[TARGETS[0]].features))
        rec["status"] = "ok" if rec["parity"]["passed"] and rec["budget"]["passed"] else "blocked"
        records.append(rec)
    if not records:
        raise LookupError(f"{soc.id} runs neither int8 nor fp32")
    m = publish_engines(home, registry, BMS_ENGINES, cohort.id, soc.id, records, version, onnx_digest,
                        f"{cohort.id}/{soc.id}/{MODEL}", {"ecu": ecu.name, "chemistry": chemistry})
    return m, records


def publish_skipped(home: HomeLayout, cohort: Cohort, reason: str) -> datasets.Manifest:
    return compile_publish_skipped(home, BMS_ENGINES, cohort.id, reason)