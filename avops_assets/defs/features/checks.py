"""Asset checks on feature tables: offline/online parity on golden windows."""

import dagster as dg

from avops.features.parity import REL_TOL
from avops.features.tables import verify_parity
from avops_assets.defs.features.assets import telemetry
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, FleetRegistryResource

CHECK_PARITY = "online_offline_parity"


@dg.asset_check(asset=telemetry, name=CHECK_PARITY, blocking=True, partitions_def=cohort_partitions)
def online_offline_parity(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource) -> dg.AssetCheckResult:
    """Golden windows (each vehicle's first, middle and last drive) recomputed online, row by row as
    the vehicle receives them, equal the offline table to float rounding (relative 1e-9)."""
    report = verify_parity(avops_home.layout(), fleet.load().cohort(context.partition_key))
    return dg.AssetCheckResult(
        passed=report.passed,
        description=(f"{report.compared} values in {len(report.windows)} golden windows agree (max relative difference "
                     f"{report.max_rel_diff:.1e}, tolerance {REL_TOL:.0e})" if report.passed else
                     f"{len(report.mismatches)} of {report.compared} values differ between offline and online"),
        metadata={"windows": len(report.windows), "values_compared": report.compared, "max_rel_diff": report.max_rel_diff,
                  "mismatches": dg.MetadataValue.json(report.mismatches[:50])},
    )
