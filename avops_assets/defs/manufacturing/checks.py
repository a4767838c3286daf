"""Blocking check on the inspection model: its gates held."""

import dagster as dg

from avops.manufacturing import pipeline
from avops_assets.defs.manufacturing.assets import inspection_models
from avops_assets.gate_checks import newest_gate_result
from avops_assets.partitions import line_partitions
from resources import AvopsHome, ModelRegistryResource

CHECK_GATES = "inspection_gates"


@dg.asset_check(asset=inspection_models, name=CHECK_GATES, blocking=True, partitions_def=line_partitions)
def inspection_gates(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    """The newest inspection model of the line met its defect-recall and false-alarm gates on held-out parts."""
    return newest_gate_result(avops_home, model_registry, pipeline.MODEL, context.partition_key, "inspection")
