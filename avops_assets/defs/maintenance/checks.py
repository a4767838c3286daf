"""Blocking check on the maintenance model: its component gates passed."""

import dagster as dg

from avops.maintenance import pipeline
from avops_assets.defs.maintenance.assets import models
from avops_assets.gate_checks import newest_gate_result
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, ModelRegistryResource

CHECK_GATES = "maintenance_gates"


@dg.asset_check(asset=models, name=CHECK_GATES, blocking=True, partitions_def=cohort_partitions)
def maintenance_gates(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome,
                      model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    """Every component gate of `config/maintenance.yaml` held for the newest maintenance model of the cohort
    (held-out error and its upper bound, skill over the cohort mean, limit recall)."""
    return newest_gate_result(avops_home, model_registry, pipeline.MODEL, context.partition_key, "maintenance")
