"""The production driver-monitoring model of a cohort as engines for its in-cabin ECU (``deploy.ecu`` of config/occupant.yaml).

The same stage as perception's and the battery's: export the checkpoint to ONNX, build every
precision the cabin SoC runs (static INT8 QDQ and graph-optimised FP32 with ONNX Runtime, the
stand-in for the SoC vendor's importer), check parity and budgets, record the compilation graph by
digest, and publish engine records the compatibility matrix and OTA packaging read like any other.

INT8 is calibrated on frames of the consented *studio* sessions only: calibration never sees the
held-out test-vehicle frames that judge it. Parity is the model's own decision: the share of the
held-out evaluation frames on which the engine picks the same driver state as the PyTorch
checkpoint (at least ``deploy.parity_min_agreement``); each engine's accuracy is recorded beside it.
Budgets are an application processor's (:func:`avops.compile.pipeline.budget`): peak memory of the
engine's session and latency per frame scaled from this host.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pandas as pd
import torch

from avops import datasets
from avops.compile import backends
from avops.compile.export import opset_of
from avops.compile.pipeline import COMPILE_VERSION, DMS_ENGINES, budget, component_target, ensure_buildable, publish_engines
from avops.compile.pipeline import publish_skipped as compile_publish_skipped
from avops.compile.socs import Soc
from avops.fleet_registry import Cohort
from avops.home import HomeLayout
from avops.occupant import cabin, model as net
from avops.occupant.config import OccupantConfig
from avops.occupant.pipeline import CONSENTED_KEY, MODEL, OccupantDataMissing, load_consented, production
from avops.registry import ModelRegistry
from avops.store import open_store

INPUT, OUTPUT = "frames", "logits"
OPSET = 17  # TorchScript exporter; within every ONNX Runtime target's range (the cabin SoC's is 13-21)
CALIBRATION_SPLIT = "studio"  # consented studio sessions: never the held-out test vehicles
CALIBRATION_FRAMES = 256
INT8_OPS = ("Conv", "Gemm", "MatMul")


class NothingToShip(LookupError):
    """No production occupant-monitoring model for the cohort, or no in-cabin ECU to run it."""


def _network(weights: dict[str, np.ndarray]) -> net.DriverStateNet:
    m = net.DriverStateNet(int(np.asarray(weights["head.weight"]).shape[0]))
    net.set_arrays(m, weights)
    return m.eval()


def export_onnx(weights: dict[str, np.ndarray], meta: dict, opset: int = OPSET) -> bytes:
    """ONNX of :class:`DriverStateNet` with these weights: input ``frames`` float32 [batch, 1, 32, 32] in [0, 1]
    (uint8 pixels / 255), output ``logits`` [batch, states]; dynamic batch; checked with ``onnx.checker``."""
    import onnx

    m = _network(weights)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(m, (torch.zeros(1, 1, 32, 32),), buf, dynamo=False, opset_version=opset, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in {"input": "frames: float32 [batch, 1, 32, 32], uint8 IR pixels / 255", "producer": "avops", **meta}.items():
        proto.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def engine_inputs(frames: np.ndarray) -> np.ndarray:
    """uint8 frames [n, 32, 32] -> the engine's input (exactly what :func:`avops.occupant.model.to_tensor` feeds the network)."""
    return net.to_tensor(frames).numpy()


def run(engine: bytes, frames: np.ndarray, batch: int = 512) -> np.ndarray:
    """The engine's logits on uint8 frames."""
    sess = backends.session(engine)
    x = engine_inputs(frames)
    out = [sess.run([OUTPUT], {INPUT: x[a:a + batch]})[0] for a in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _label_ids(labels: pd.DataFrame, states: tuple[str, ...]) -> np.ndarray:
    return labels["state"].map({s: i for i, s in enumerate(states)}).to_numpy()


def parity(reference: np.ndarray, engine: bytes, frames: np.ndarray, labels: pd.DataFrame, states: tuple[str, ...],
           min_agreement: float) -> dict:
    """Share of held-out frames where the engine's class equals the checkpoint's (``reference``: its argmax per frame)."""
    pred = run(engine, frames).argmax(1)
    y = _label_ids(labels, states)
    n = int(len(frames))
    agreement = float((pred == reference).mean()) if n else float("nan")
    passed = bool(n > 0 and agreement >= min_agreement)
    per_state = {s: float((pred[y == i] == reference[y == i]).mean()) for i, s in enumerate(states) if (y == i).any()}
    return {"passed": passed, "agreement": agreement, "min_agreement": min_agreement, "frames": n,
            "disagreements": int((pred != reference).sum()), "agreement_by_state": per_state,
            "accuracy": float((pred == y).mean()) if n else float("nan"),
            "checkpoint_accuracy": float((reference == y).mean()) if n else float("nan"),
            **({} if n else {"reason": "no held-out evaluation frames to judge parity on"})}


def target(cohort: Cohort, config: OccupantConfig, socs: dict[str, Soc]):
    """The cabin ECU of this cohort's vehicles and its SoC from the catalog."""
    return component_target(cohort, config.ecu, socs, NothingToShip, "occupant.yaml's deploy.ecu")


def calibration_frames(frames: np.ndarray, n: int = CALIBRATION_FRAMES) -> np.ndarray:
    """Evenly spaced frames across every studio session (deterministic, no RNG)."""
    if len(frames) <= n:
        return frames
    return frames[np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))]


def build_engines(home: HomeLayout, registry: ModelRegistry, cohort: Cohort, config: OccupantConfig, socs: dict[str, Soc],
                  measure_runs: int = 50, weights_override: bytes | None = None) -> tuple[datasets.Manifest, list[dict]]:
    """Build the cohort's production driver-monitoring model for its cabin ECU; :class:`NothingToShip` when there is none.

    ``weights_override`` builds from other weights than the checkpoint's (planted-fault tests); the
    records still name the checkpoint, which is exactly what parity must catch.
    """
    store = open_store(home)
    version = production(registry, cohort.id)
    if version is None:
        raise NothingToShip(f"{cohort.id} has no production {MODEL} model (none passed its slice gates yet): nothing to compile")
    ecu, soc = target(cohort, config, socs)
    ensure_buildable(soc)
    try:
        eval_frames, eval_labels, consented = load_consented(home, cohort.id, "eval", store)
        studio_frames, studio_labels, _ = load_consented(home, cohort.id, CALIBRATION_SPLIT, store)
    except OccupantDataMissing as exc:
        raise NothingToShip(str(exc)) from None
    weights = net.arrays_from_bytes(store.get_bytes(version.artifact_sha256))
    reference = net.predict(_network(weights), eval_frames)
    opset = min(max(OPSET, soc.opset[0]), soc.opset[1])
    built_from = net.arrays_from_bytes(weights_override) if weights_override is not None else weights
    onnx_bytes = export_onnx(built_from, {"model_version": str(version.version), "cohort": cohort.id,
                                          "checkpoint_sha256": version.artifact_sha256, "states": list(config.states)}, opset)
    onnx_digest = store.put_bytes(onnx_bytes)
    calib = calibration_frames(studio_frames)
    leaked = set(cabin.frame_digests(calib)) & set(cabin.frame_digests(eval_frames))
    shared_sessions = sorted(set(studio_labels["session"]) & set(eval_labels["session"]))
    if leaked or shared_sessions:
        raise ValueError(f"INT8 calibration frames of {cohort.id} overlap the held-out evaluation frames "
                         f"({len(leaked)} identical frames, shared sessions {shared_sessions}): calibration must never see the test")
    calib_x = engine_inputs(calib)
    calib_sha = store.put_bytes(calib_x.tobytes())
    records = []
    for precision in [p for p in ("int8", "fp32") if p in soc.precisions]:
        e = (backends.build_ort_int8(onnx_bytes, soc.id, calib_x, calib_sha, input_name=INPUT, op_types=INT8_OPS)
             if precision == "int8" else backends.build_ort_fp32(onnx_bytes, soc.id))
        digest = store.put_bytes(e.data)
        rec = {"component": MODEL, "cohort": cohort.id, "soc": soc.id, "precision": precision, "toolchain": e.toolchain,
               "toolchain_version": e.toolchain_version, "runtime": e.runtime, "engine_sha256": digest, "engine_bytes": len(e.data),
               "source_onnx_sha256": onnx_digest, "opset": opset_of(onnx_bytes), "source_checkpoint_sha256": version.artifact_sha256,
               "model_version": version.version, "dataset_commit": consented.digest,
               "dataset_uri": f"avops:{CONSENTED_KEY}@{consented.digest}", "build_flags": e.build_flags,
               "calibration_sha256": calib_sha if precision == "int8" else None,
               "calibration_split": CALIBRATION_SPLIT if precision == "int8" else None,
               "calibration_frames": int(len(calib)) if precision == "int8" else 0,
               "deterministic": e.deterministic, "notes": e.notes, "target": soc.spec(),
               "ecus": [{"name": ecu.name, "hardware_id": ecu.hardware_id, "firmware": ecu.firmware}],
               "vehicle_runtime": f"{soc.toolchain} {soc.toolchain_version(cohort.model_year)}", "compile_version": COMPILE_VERSION,
               "inputs": [INPUT], "states": list(config.states)}
        rec["parity"] = parity(reference, e.data, eval_frames, eval_labels, config.states, config.parity_min_agreement)
        rec["budget"] = budget(soc, backends.measure(e.data, measure_runs), len(e.data))
        rec["status"] = "ok" if rec["parity"]["passed"] and rec["budget"]["passed"] else "blocked"
        records.append(rec)
    if not records:
        raise LookupError(f"{soc.id} runs neither int8 nor fp32: the driver-monitoring model has no engine for it")
    m = publish_engines(home, registry, DMS_ENGINES, cohort.id, soc.id, records, version, onnx_digest,
                        f"{cohort.id}/{soc.id}/{MODEL}", {"ecu": ecu.name, "eval_manifest": consented.digest})
    return m, records


def publish_skipped(home: HomeLayout, cohort: Cohort, reason: str) -> datasets.Manifest:
    """No production model or no cabin ECU: an explicit, empty engine set (the package ships without the component, and says why)."""
    return compile_publish_skipped(home, DMS_ENGINES, cohort.id, reason)
