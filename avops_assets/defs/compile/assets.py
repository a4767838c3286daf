"""Compile: per-SoC engines (and SIL engines) from the validated checkpoint, and the compatibility matrix."""

import dagster as dg

from avops.compile import pipeline as compile_pipeline
from avops.compile.backends import ToolchainUnavailable
from avops.compile.socs import load_catalog
from avops.training.gates import load_gate_policy
from avops.battery import engines as bms_engines_lib
from avops.battery.config import load_battery_config
from avops.maintenance import engines as maintenance_engines_lib
from avops.maintenance.config import load_maintenance_config
from avops.occupant import engines as dms_engines_lib
from avops.occupant.config import load_occupant_config
from avops_assets.defs.curation.assets import PROPAGATE
from avops_assets.defs.battery.assets import SOH_MODELS
from avops_assets.defs.maintenance.assets import MODELS as MAINTENANCE_MODELS
from avops_assets.defs.occupant.assets import DMS_MODEL
from avops_assets.defs.training.assets import VALIDATED
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, DatasetVersioning, FleetRegistryResource, ModelRegistryResource

ENGINES = dg.AssetKey(["compile", "engines"])
SIL_ENGINES = dg.AssetKey(["compile", "sil_engines"])
COMPATIBILITY = dg.AssetKey(["compile", "compatibility"])
MAINTENANCE_ENGINES = dg.AssetKey(["compile", "maintenance_engines"])
BMS_ENGINES = dg.AssetKey(["compile", "bms_engines"])
DMS_ENGINES = dg.AssetKey(["compile", "dms_engines"])
SIL_TARGET = "x86-ecu"

COMMON = dict(group_name="compile", partitions_def=cohort_partitions, code_version=compile_pipeline.COMPILE_VERSION,
              automation_condition=PROPAGATE)


def _engine_table(records: list[dict]) -> str:
    lines = ["**Engines and their compilation graph**", "",
             "| precision | toolchain | engine | ← onnx | ← checkpoint | calibration | parity (worst drop) | latency on target | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        drops = [s["drop"] for s in r["parity"].get("slices", {}).values() if s["drop"] is not None]
        worst = f"{max(drops):+.3f}" if drops else "n/a"
        lat = r["budget"].get("latency_ms_target_estimate")
        lines.append(f"| {r['precision']} | {r['toolchain']} {r['toolchain_version']} | `{r['engine_sha256'][:12]}` | "
                     f"`{r['source_onnx_sha256'][:12]}` | `{r['source_checkpoint_sha256'][:12]}` (v{r['model_version']}) | "
                     f"{r['calibration_frames'] or '—'} | {worst} | {'n/a' if lat is None else f'{lat:.2f} ms (est.)'} | {r['status']} |")
    return "\n".join(lines) + "\n"


def _build(context, target: str | None, key: str, avops_home, dataset_versioning, model_registry, fleet) -> dg.MaterializeResult:
    cohort = fleet.load().cohort(context.partition_key)
    socs = load_catalog()
    soc_id = target or cohort.soc
    if soc_id not in socs:
        raise dg.Failure(f"SoC {soc_id!r} of cohort {cohort.id} is not in config/socs.yaml: add it there (see README, 'Adding a target')")
    try:
        m, records = compile_pipeline.build_engines(avops_home.layout(), dataset_versioning.open(), model_registry.open(), cohort,
                                                    socs[soc_id], load_gate_policy(), key=key)
    except ToolchainUnavailable as exc:
        raise dg.Failure(str(exc), metadata={"soc": soc_id, "toolchain": socs[soc_id].toolchain, "buildable_here": False}) from exc
    except LookupError as exc:
        raise dg.Failure(str(exc)) from exc
    return dg.MaterializeResult(
        metadata={"soc": soc_id, "target": dg.MetadataValue.json(socs[soc_id].spec()), "engines": dg.MetadataValue.md(_engine_table(records)),
                  "engine_records": dg.MetadataValue.json(records), "source_onnx_sha256": m.body["source_onnx_sha256"],
                  "source_checkpoint_sha256": m.body["source_checkpoint_sha256"], "model_version": m.body["model_version"],
                  "manifest_sha256": m.digest},
        data_version=dg.DataVersion(m.digest),
    )


@dg.asset(key=ENGINES, deps=[VALIDATED], kinds={"onnx"}, op_tags={"avops/toolchain": "per-soc"}, **COMMON)
def engines(context: dg.AssetExecutionContext, avops_home: AvopsHome, dataset_versioning: DatasetVersioning,
            model_registry: ModelRegistryResource, fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """Engines of the validated checkpoint for the cohort's SoC (config/socs.yaml), one per precision it runs.

    ONNX Runtime targets build here (graph-optimized FP32, static INT8 QDQ calibrated on the
    calibration split); TensorRT targets build on a GPU executor (job `compile_engines_gpu`) and
    fail fast elsewhere. Each engine records its compilation graph: checkpoint -> ONNX -> engine.
    """
    return _build(context, None, compile_pipeline.ENGINES, avops_home, dataset_versioning, model_registry, fleet)


@dg.asset(key=SIL_ENGINES, deps=[VALIDATED], kinds={"onnx"}, **COMMON)
def sil_engines(context: dg.AssetExecutionContext, avops_home: AvopsHome, dataset_versioning: DatasetVersioning,
                model_registry: ModelRegistryResource, fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """The same checkpoint compiled for the x86 simulation ECU (software/hardware-in-the-loop testing)."""
    return _build(context, SIL_TARGET, compile_pipeline.SIL_ENGINES, avops_home, dataset_versioning, model_registry, fleet)


def _component_engines(context, avops_home: AvopsHome, build, lib, cohort, table) -> dg.MaterializeResult:
    """A non-perception component's engines for its own ECU: built, or an explicit empty set saying why not."""
    home = avops_home.layout()
    try:
        m, records = build(home, cohort)
    except lib.NothingToShip as exc:
        m = lib.publish_skipped(home, cohort, str(exc))
        context.log.warning(str(exc))
        return dg.MaterializeResult(metadata={"skipped": str(exc), "manifest_sha256": m.digest}, data_version=dg.DataVersion(m.digest))
    except (ToolchainUnavailable, LookupError) as exc:
        raise dg.Failure(str(exc)) from exc
    return dg.MaterializeResult(
        metadata={"soc": m.body["soc"], "ecu": m.body["ecu"], **({"chemistry": m.body["chemistry"]} if "chemistry" in m.body else {}),
                  "target": dg.MetadataValue.json(records[0]["target"]), "engines": dg.MetadataValue.md(table(records)),
                  "engine_records": dg.MetadataValue.json(records), "parity": dg.MetadataValue.json({r["precision"]: r["parity"] for r in records}),
                  "source_onnx_sha256": m.body["source_onnx_sha256"], "source_checkpoint_sha256": m.body["source_checkpoint_sha256"],
                  "model_version": m.body["model_version"], "manifest_sha256": m.digest},
        data_version=dg.DataVersion(m.digest))


@dg.asset(key=MAINTENANCE_ENGINES, deps=[MAINTENANCE_MODELS], kinds={"onnx"}, **COMMON)
def maintenance_engines(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource,
                        fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """Engines of the cohort's production maintenance model for the ECU that runs it (`deploy.ecu` in
    config/maintenance.yaml, the gateway; its SoC from the fleet registry).

    Parity: the engine's wear estimates on every training row within `parity_max_mm` of the
    checkpoint, and the same service-due decisions; budgets: the gateway SoC's. A cohort whose
    maintenance model never passed its gates gets an explicit empty set: its package ships
    perception alone, and says why.
    """
    return _component_engines(context, avops_home, lambda home, cohort: maintenance_engines_lib.build_engines(
        home, model_registry.open(), cohort, load_maintenance_config(), load_catalog()), maintenance_engines_lib,
        fleet.load().cohort(context.partition_key), _engine_table_maintenance)


def _engine_table_maintenance(records: list[dict]) -> str:
    lines = ["**Maintenance engines (gateway)**", "",
             "| precision | toolchain | engine | ← onnx | ← checkpoint | parity (max mm) | latency on target | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        worst = max((c["max_abs_diff_mm"] for c in r["parity"]["components"].values()), default=0.0)
        lat = r["budget"].get("latency_ms_target_estimate")
        lines.append(f"| {r['precision']} | {r['toolchain']} {r['toolchain_version']} | `{r['engine_sha256'][:12]}` | "
                     f"`{r['source_onnx_sha256'][:12]}` | `{r['source_checkpoint_sha256'][:12]}` (v{r['model_version']}) | "
                     f"{worst:.2e} | {'n/a' if lat is None else f'{lat:.3f} ms (est.)'} | {r['status']} |")
    return "\n".join(lines) + "\n"


@dg.asset(key=BMS_ENGINES, deps=[dg.AssetDep(SOH_MODELS, partition_mapping=dg.AllPartitionMapping())], kinds={"onnx"}, **COMMON)
def bms_engines(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource,
                fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """The production SoH/RUL model of the cohort's cell chemistry (config/battery.yaml) as an INT8 engine
    for the cohort's BMS microcontroller (`deploy.ecu`; its SoC from the fleet registry).

    Parity: SoH and RUL of the engine against the float64 checkpoint on every training row;
    budgets: the MCU's (engine bytes + activations, latency scaled from this host). A cohort whose
    chemistry has no production model gets an explicit empty set and says why.
    """
    return _component_engines(context, avops_home, lambda home, cohort: bms_engines_lib.build_engines(
        home, model_registry.open(), cohort, load_battery_config(), load_catalog()), bms_engines_lib,
        fleet.load().cohort(context.partition_key), _engine_table_bms)


def _engine_table_bms(records: list[dict]) -> str:
    lines = ["**Battery SoH/RUL engines (BMS)**", "",
             "| precision | engine | ← onnx | ← checkpoint | SoH parity (max) | RUL parity (max cycles) | flash + RAM | latency on target | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        t, b = r["parity"]["targets"], r["budget"]
        lines.append(f"| {r['precision']} | `{r['engine_sha256'][:12]}` | `{r['source_onnx_sha256'][:12]}` | "
                     f"`{r['source_checkpoint_sha256'][:12]}` (v{r['model_version']}) | {t['soh']['max_abs_diff']:.4f} | "
                     f"{t['rul_cycles']['max_abs_diff']:.2f} | {b['engine_bytes'] + b['activation_bytes']} B of "
                     f"{b['memory_budget_mb'] * 2**20:.0f} B | {b['latency_ms_target_estimate']:.3f} ms (est.) | {r['status']} |")
    return "\n".join(lines) + "\n"


@dg.asset(key=DMS_ENGINES, deps=[dg.AssetDep(DMS_MODEL, partition_mapping=dg.IdentityPartitionMapping())], kinds={"onnx"}, **COMMON)
def dms_engines(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource,
                fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """The cohort's production driver-monitoring model (occupant/dms_model) as INT8 and FP32 engines for the
    in-cabin ECU (`deploy.ecu` in config/occupant.yaml; its SoC from the fleet registry).

    INT8 is calibrated on consented studio frames only; parity: the share of the held-out test-vehicle
    frames on which the engine picks the same driver state as the checkpoint (at least
    `deploy.parity_min_agreement`), each engine's accuracy beside it; budgets: the cabin SoC's. A cohort
    without a production model (its slice gates never passed) gets an explicit empty set and says why.
    """
    return _component_engines(context, avops_home, lambda home, cohort: dms_engines_lib.build_engines(
        home, model_registry.open(), cohort, load_occupant_config(), load_catalog()), dms_engines_lib,
        fleet.load().cohort(context.partition_key), _engine_table_dms)


def _engine_table_dms(records: list[dict]) -> str:
    lines = ["**Driver-monitoring engines (cabin)**", "",
             "| precision | engine | ← onnx | ← checkpoint | agreement with checkpoint | accuracy (held out) | memory | latency on target | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        p, b = r["parity"], r["budget"]
        mem = f"{b['peak_memory_mb']:.2f} of {b['memory_budget_mb']:g} MB" if "peak_memory_mb" in b else "n/a"
        lat = b.get("latency_ms_target_estimate")
        lines.append(f"| {r['precision']} | `{r['engine_sha256'][:12]}` | `{r['source_onnx_sha256'][:12]}` | "
                     f"`{r['source_checkpoint_sha256'][:12]}` (v{r['model_version']}) | {p['agreement']:.3f} (min {p['min_agreement']}, "
                     f"{p['disagreements']} of {p['frames']} differ) | {p['accuracy']:.3f} (checkpoint {p['checkpoint_accuracy']:.3f}) | "
                     f"{mem} | {'n/a' if lat is None else f'{lat:.3f} ms (est.)'} | {r['status']} |")
    return "\n".join(lines) + "\n"


# Depends on the SIL engines, not the vehicle engines: a TensorRT cohort's `engines` partition fails
# here (no GPU), and the matrix must still be rebuilt; it reads every cohort's current engine
# manifests from the store. The maintenance engines feed it too (they run on the gateway), and so do the
# battery (BMS) and driver-monitoring (cabin) engines.
# Eager even when some engine set is missing: a cohort whose perception is blocked (no SIL engines)
# still ships the components that passed (maintenance, battery); each component holds back only itself.
ANY_ENGINES = (dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()).with_label("eager_allow_missing")
               & dg.AutomationCondition.all_deps_match(
                   dg.AutomationCondition.missing()
                   | dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed() | dg.AutomationCondition.will_be_requested(),
                                                             blocking_only=True)).with_label("present_deps_blocking_checks_passed")
               & dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing()).with_label("some_engines_exist"))


@dg.asset(key=COMPATIBILITY, deps=[SIL_ENGINES, MAINTENANCE_ENGINES, BMS_ENGINES, DMS_ENGINES], kinds={"json"},
          **{**COMMON, "automation_condition": ANY_ENGINES})
def compatibility(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """Every engine built so far against this cohort's vehicles: compatible or not, with the reason.

    The cohort's model year pins its runtime (config/socs.yaml); OTA packaging ships only engines
    this matrix allows.
    """
    registry = fleet.load()
    cohort = registry.cohort(context.partition_key)
    m, rows = compile_pipeline.publish_compatibility(avops_home.layout(), cohort, registry.cohort_ids, load_catalog())
    ok = rows[rows["compatible"]]
    lines = ["**Engines × this cohort**", "", "| engine | built for | soc | precision | toolchain | compatible | reason |", "|---|---|---|---|---|---|---|"]
    for r in rows.to_dict("records"):
        engine = f"`{r['engine_sha256'][:12]}`" if r["engine_sha256"] else "—"
        lines.append(f"| {engine} | {r['built_for'] or '—'} | {r['soc']} | {r['precision']} | {r['toolchain']} | "
                     f"{'✅' if r['compatible'] else '⛔'} | {r['reason']} |")
    return dg.MaterializeResult(metadata={"compatible_engines": len(ok), "engines_considered": len(rows),
                                          "matrix": dg.MetadataValue.md("\n".join(lines) + "\n"), "manifest_sha256": m.digest},
                                data_version=dg.DataVersion(m.digest))
