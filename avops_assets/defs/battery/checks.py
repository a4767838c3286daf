"""Blocking checks on battery assets: online/offline parity, golden vectors vs the float32 reference, model gates."""

import dagster as dg

from avops import datasets
from avops.battery import bms_reference, golden, pipeline
from avops.battery.config import load_battery_config
from avops_assets.defs.battery.assets import battery_cells, battery_golden_vectors, chemistries, soh_models
from avops_assets.gate_checks import newest_gate_result
from avops_assets.partitions import battery_fleet_partitions
from resources import AvopsHome, ModelRegistryResource


@dg.asset_check(asset=battery_cells, name="battery_online_offline_parity", blocking=True, partitions_def=battery_fleet_partitions)
def battery_online_offline_parity(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """Every reference test of the fleet recomputed online, cell by cell as its BMS would (keeping only its
    small state), equals the offline table to float rounding (relative 1e-8, absolute below 1)."""
    r = pipeline.verify_parity(avops_home.layout(), load_battery_config(), context.partition_key)
    return dg.AssetCheckResult(
        passed=r.passed,
        description=(f"{r.compared} values agree (max relative difference {r.max_rel_diff:.1e})" if r.passed else
                     f"{len(r.mismatches)} of {r.compared} values differ between offline and online"),
        metadata={"values_compared": r.compared, "max_rel_diff": r.max_rel_diff, "mismatches": dg.MetadataValue.json(r.mismatches[:50])})


@dg.asset_check(asset=battery_golden_vectors, name="float32_reference_matches_golden", blocking=True, partitions_def=chemistries)
def float32_reference_matches_golden(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """The float32 reference implementation (what a BMS port is checked against) reproduces every golden
    vector within its tolerances."""
    store = avops_home.object_store()
    m = datasets.current(store, avops_home.layout().refs, "features/battery_golden_vectors", context.partition_key)
    if m is None:
        return dg.AssetCheckResult(passed=False, description="no golden vectors published yet")
    doc = golden.read_golden_vectors(store.get_bytes(m.body["golden_sha256"]))
    report = golden.check_against_golden(doc, bms_reference.online_features_f32)
    return dg.AssetCheckResult(passed=report.passed, description=report.summary(),
                               metadata={"golden_sha256": m.body["golden_sha256"], "max_errors": dg.MetadataValue.json(report.max_errors),
                                         "failures": dg.MetadataValue.json(report.failures[:50])})


@dg.asset_check(asset=soh_models, name="battery_gates", blocking=True, partitions_def=chemistries)
def battery_gates(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    """Every gate of config/battery.yaml held for the chemistry's newest battery model (per temperature band,
    held-out cells)."""
    return newest_gate_result(avops_home, model_registry, pipeline.MODEL, context.partition_key, "battery")
