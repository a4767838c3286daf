"""Engines of the cohort's production maintenance model for the ECU that runs it (the gateway).

The same stage as perception's: export to ONNX, build for the target's toolchain, check parity
with the checkpoint and the target's budgets, record the compilation graph by digest, and publish
engine records the compatibility matrix and OTA packaging read like any other. Parity here is the
model's own: the engine's wear estimates on every feature row the model was trained on, against
the float64 checkpoint, and the same service-due decisions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from avops import datasets
from avops.compile import backends
from avops.compile.export import opset_of
from avops.compile.pipeline import COMPILE_VERSION, MAINTENANCE_ENGINES, budget, component_target, ensure_buildable, publish_engines
from avops.compile.pipeline import publish_skipped as compile_publish_skipped
from avops.compile.socs import Soc
from avops.features.tables import FEATURE_TABLE
from avops.fleet_registry import Cohort
from avops.home import HomeLayout
from avops.maintenance.config import MaintenanceConfig
from avops.maintenance.export import export_onnx, feature_order, run
from avops.maintenance.model import ComponentModel
from avops.maintenance.pipeline import MODEL, load_checkpoint, production
from avops.registry import ModelRegistry
from avops.store import open_store


class NothingToShip(LookupError):
    """No production maintenance model (none passed its gates), or vehicles without the ECU that runs it."""


def target(cohort: Cohort, config: MaintenanceConfig, socs: dict[str, Soc]) -> tuple[str, Soc]:
    """The ECU that runs the model in this cohort's vehicles, and its SoC from the catalog."""
    ecu, soc = component_target(cohort, config.ecu, socs, NothingToShip, "maintenance.yaml's deploy.ecu")
    return ecu.name, soc


def parity(components: dict[str, ComponentModel], engine: bytes, X: pd.DataFrame, max_mm: float) -> dict:
    """Per component: the largest |engine - checkpoint| in mm over the rows, and decisions that differ."""
    columns = feature_order(components)
    out = run(engine, X.reindex(columns=columns).to_numpy(dtype=np.float32))
    rows, ok = {}, True
    for name, c in components.items():
        ref = c.predict(X)
        diff = np.abs(out[f"{name}_mm"].astype(np.float64) - ref)
        ref_due = c.service_due(X)
        # a row whose estimate lies within float32 rounding of the limit may decide either way
        margin = np.abs(ref - c.wear_rate_mm_per_day * c.horizon_days - c.wear_limit_mm)
        flips = int(((out[f"{name}_due"] != ref_due) & (margin > max_mm)).sum())
        worst = float(diff.max()) if diff.size else 0.0
        passed = worst <= max_mm and flips == 0
        ok &= passed
        rows[name] = {"max_abs_diff_mm": worst, "max_mm": max_mm, "rows": int(len(X)), "decision_flips": flips, "passed": passed}
    return {"passed": ok, "components": rows}


def build_engines(home: HomeLayout, registry: ModelRegistry, cohort: Cohort, config: MaintenanceConfig, socs: dict[str, Soc],
                  measure_runs: int = 200) -> tuple[datasets.Manifest, list[dict]]:
    """Build the production maintenance model for the cohort's gateway; raises :class:`NothingToShip` when there is none or no ECU runs it."""
    store = open_store(home)
    version = production(registry, cohort.id)
    if version is None:
        raise NothingToShip(f"{cohort.id} has no production maintenance model (none passed its gates yet): nothing to compile")
    ecu_name, soc = target(cohort, config, socs)
    ensure_buildable(soc)
    body, components = load_checkpoint(store, version.artifact_sha256)
    fm = datasets.Manifest(body["feature_manifest"], store.get_json(body["feature_manifest"]))  # type: ignore[arg-type]
    X = datasets.read_table(store, fm, FEATURE_TABLE).to_pandas()
    onnx_bytes = export_onnx(components, {"model_version": version.version, "cohort": cohort.id,
                                          "checkpoint_sha256": version.artifact_sha256})
    onnx_digest = store.put_bytes(onnx_bytes)
    ecu = cohort.ecu(ecu_name)
    records = []
    for precision in [p for p in ("fp32",) if p in soc.precisions]:
        e = backends.build_ort_fp32(onnx_bytes, soc.id)
        digest = store.put_bytes(e.data)
        rec = {"component": MODEL, "cohort": cohort.id, "soc": soc.id, "precision": precision, "toolchain": e.toolchain,
               "toolchain_version": e.toolchain_version, "runtime": e.runtime, "engine_sha256": digest, "engine_bytes": len(e.data),
               "source_onnx_sha256": onnx_digest, "opset": opset_of(onnx_bytes), "source_checkpoint_sha256": version.artifact_sha256,
               "model_version": version.version, "dataset_commit": fm.digest, "dataset_uri": f"avops:features/telemetry@{fm.digest}",
               "build_flags": e.build_flags, "calibration_sha256": None, "calibration_split": None, "calibration_frames": 0,
               "deterministic": e.deterministic, "notes": e.notes, "target": soc.spec(),
               "ecus": [{"name": ecu.name, "hardware_id": ecu.hardware_id, "firmware": ecu.firmware}],
               "vehicle_runtime": f"{soc.toolchain} {soc.toolchain_version(cohort.model_year)}", "compile_version": COMPILE_VERSION,
               "inputs": feature_order(components)}
        rec["parity"] = parity(components, e.data, X, config.parity_max_mm)
        rec["budget"] = budget(soc, backends.measure(e.data, measure_runs), len(e.data))
        rec["status"] = "ok" if rec["parity"]["passed"] and rec["budget"]["passed"] else "blocked"
        records.append(rec)
    if not records:
        raise LookupError(f"{soc.id} runs none of the precisions the maintenance model is built in (fp32)")
    m = publish_engines(home, registry, MAINTENANCE_ENGINES, cohort.id, soc.id, records, version, onnx_digest,
                        f"{cohort.id}/{soc.id}/{MODEL}", {"ecu": ecu.name})
    return m, records


def publish_skipped(home: HomeLayout, cohort: Cohort, reason: str) -> datasets.Manifest:
    """No production model: an explicit, empty engine set (the package ships without the component, and says why)."""
    return compile_publish_skipped(home, MAINTENANCE_ENGINES, cohort.id, reason)