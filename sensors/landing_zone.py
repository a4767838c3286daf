"""New drive logs in the landing zone -> register the cohort partition, ingest it."""


import dagster as dg

from avops.landing import LandingCursor, scan_new
from avops_assets.defs.ingest.assets import RAW_DRIVES
from avops_assets.partitions import COHORTS, cohort_partitions
from resources import AvopsHome, FleetRegistryResource


@dg.sensor(
    name="landing_zone_sensor",
    target=dg.AssetSelection.assets(RAW_DRIVES),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one ingest run per cohort that received new drive logs since the last tick.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, avops_home: AvopsHome, fleet: FleetRegistryResource) -> dg.SensorResult:
    cursor = LandingCursor.from_json(context.cursor)
    new, advanced = scan_new(avops_home.layout().landing, cursor)
    if not new:
        return dg.SensorResult(skip_reason="no new files in the landing zone", cursor=advanced.to_json())
    registry = fleet.load()
    known = set(registry.cohort_ids)
    unknown = sorted(set(new) - known)
    if unknown:
        context.log.warning(f"files landed for cohorts missing from {registry.path}: {unknown}; add them to the registry to ingest them")
    cohorts = sorted(set(new) & known)
    existing = set(context.instance.get_dynamic_partitions(COHORTS))
    to_add = [c for c in cohorts if c not in existing]
    run_requests = [
        dg.RunRequest(
            run_key=f"{c}:{advanced.watermark_ns}",
            partition_key=c,
            tags={"avops/trigger": "landing_zone", "avops/new_files": str(len(new[c]))},
        )
        for c in cohorts
    ]
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[cohort_partitions.build_add_request(to_add)] if to_add else [],
        cursor=advanced.to_json(),
        **({"skip_reason": f"only unknown cohorts: {unknown}"} if not run_requests else {}),
    )

