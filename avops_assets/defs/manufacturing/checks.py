"""Blocking check on the inspection model: its gates held."""

import dagster as dg

from avops.manufacturing import pipeline
from avops_assets.defs.manufacturing.assets import inspection_models
from avops_assets.partitions import line_partitions
from resources import AvopsHome, ModelRegistryResource

CHECK_GATES = "inspection_gates"


@dg.asset_check(asset=inspection_models, name=CHECK_GATES, blocking=True, partitions_def=line_partitions)
def inspection_gates(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    """The newest inspection model of the line met its defect-recall and false-alarm gates on held-out parts."""
    versions = model_registry.open().list(pipeline.MODEL, cohort=context.partition_key)
    if not versions:
        return dg.AssetCheckResult(passed=False, description=f"no inspection model registered for {context.partition_key}")
    newest = max(versions, key=lambda v: v.version)
    evidence = avops_home.object_store().get_json(newest.lineage["evidence_sha256"])
    failed = [g for g in evidence["gates"] if g["blocks"]]
    return dg.AssetCheckResult(passed=not failed,
                               description=(f"v{newest.version}: gates held" if not failed else
                                            f"v{newest.version} blocked: " + "; ".join(f"{g['gate']} {g['reason']}" for g in failed)),
                               metadata={"version": newest.version, "stage": newest.stage, "gates": dg.MetadataValue.json(evidence["gates"])})
