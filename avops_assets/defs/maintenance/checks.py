"""Blocking check on the maintenance model: its component gates passed."""

import dagster as dg

from avops.maintenance import pipeline
from avops_assets.defs.maintenance.assets import models
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, ModelRegistryResource

CHECK_GATES = "maintenance_gates"


@dg.asset_check(asset=models, name=CHECK_GATES, blocking=True, partitions_def=cohort_partitions)
def maintenance_gates(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome,
                      model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    """Every component gate of `config/maintenance.yaml` held for the newest maintenance model of the cohort
    (held-out error and its upper bound, skill over the cohort mean, limit recall)."""
    cohort = context.partition_key
    versions = model_registry.open().list(pipeline.MODEL, cohort=cohort)
    if not versions:
        return dg.AssetCheckResult(passed=False, description=f"no maintenance model registered for {cohort}")
    newest = max(versions, key=lambda v: v.version)
    evidence = avops_home.object_store().get_json(newest.lineage["evidence_sha256"])
    failed = [g for g in evidence["gates"] if g["blocks"]]
    return dg.AssetCheckResult(
        passed=not failed,
        description=(f"v{newest.version}: all gates held" if not failed else
                     f"v{newest.version} blocked: " + "; ".join(f"{g['gate']} {g['reason']}" for g in failed)),
        metadata={"version": newest.version, "stage": newest.stage, "evidence_sha256": newest.lineage["evidence_sha256"],
                  "gates": dg.MetadataValue.json(evidence["gates"])},
    )
