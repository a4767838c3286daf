"""Blocking checks: no cabin data reached the cloud, the privacy budget holds, the slice gates hold."""

import dagster as dg

from avops.occupant import pipeline, privacy
from avops.occupant.config import load_occupant_config
from avops.occupant.report import findings_markdown
from avops_assets.defs.occupant.assets import dms_model, rounds, rounds_partitions
from avops_assets.gate_checks import newest_gate_result
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, DatasetVersioning, ModelRegistryResource


def _round(context, avops_home: AvopsHome):
    keys = context.partition_key.keys_by_dimension
    return keys["cohort"], keys["round"], pipeline.round_manifest(avops_home.layout(), keys["cohort"], keys["round"], avops_home.object_store())


@dg.asset_check(asset=rounds, name="no_cabin_data_uploaded", blocking=True, partitions_def=rounds_partitions)
def no_cabin_data_uploaded(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome,
                           dataset_versioning: DatasetVersioning) -> dg.AssetCheckResult:
    """Recomputed now, not read from the round: every byte the vehicles uplinked is a weight of the model
    (schema by name, shape and dtype) or an allowed scalar, no cabin frame (by sha256, or embedded in a
    larger blob) is in the uplink, the cloud object store or any branch of the dataset versioning backend."""
    cohort, rnd, m = _round(context, avops_home)
    if m is None:
        return dg.AssetCheckResult(passed=False, description=f"round {rnd} of {cohort} has not run")
    r = pipeline.verify_round(avops_home.layout(), load_occupant_config(), cohort, m, avops_home.object_store(),
                              pipeline.versioned_digests(dataset_versioning.open()))
    kinds = sorted({f["kind"] for f in r["findings"]})
    return dg.AssetCheckResult(
        passed=r["passed"],
        description=(f"{r['uplinked_items']} uplinked items and the cloud stores hold none of {r['frames_checked']} cabin frames"
                     if r["passed"] else f"{len(r['findings'])} finding(s): {', '.join(kinds)}: the round is blocked"),
        metadata={"frames_checked": r["frames_checked"], "uplinked_items": r["uplinked_items"],
                  "findings": dg.MetadataValue.md(findings_markdown(r["findings"])), "uplink_log_sha256": m.body["uplink_log_sha256"]})


@dg.asset_check(asset=rounds, name="privacy_budget_within_limit", blocking=True, partitions_def=rounds_partitions)
def privacy_budget_within_limit(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """Every vehicle's ε so far (the larger of its own Opacus ledger and the cloud's dp-accounting
    recomputation) is within `max_epsilon`, and no vehicle spent more than the cloud accounts for."""
    cohort, rnd, m = _round(context, avops_home)
    if m is None:
        return dg.AssetCheckResult(passed=False, description=f"round {rnd} of {cohort} has not run")
    problems = privacy.budget_findings(m.body["epsilon"], m.body["dp"]["max_epsilon"])
    return dg.AssetCheckResult(
        passed=not problems,
        description=(f"max ε {m.body['epsilon_max']:.2f} ≤ {m.body['dp']['max_epsilon']:g} at δ={m.body['dp']['delta']:g}" if not problems
                     else "; ".join(problems)[:1000]),
        metadata={"epsilon_max": m.body["epsilon_max"], "max_epsilon": m.body["dp"]["max_epsilon"], "delta": m.body["dp"]["delta"],
                  "epsilon_by_vehicle": dg.MetadataValue.json(m.body["epsilon"])})


@dg.asset_check(asset=dms_model, name="occupant_slice_gates", blocking=True, partitions_def=cohort_partitions)
def occupant_slice_gates(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome,
                         model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    """Every slice floor, the overall floor and the fairness gap of config/occupant.yaml held for the
    cohort's newest occupant model, on the consenting test vehicles (a slice without enough frames fails)."""
    return newest_gate_result(avops_home, model_registry, pipeline.MODEL, context.partition_key, "occupant monitoring")
