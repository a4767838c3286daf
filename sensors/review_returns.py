"""Reviewed labels returned by people -> rebuild that cohort's curated set (and release it if it passes)."""

import dagster as dg

from avops.curation.reviews import review_root
from avops.landing import LandingCursor, scan_new
from avops_assets.defs.curation.assets import CURATED_SETS, RELEASED_SETS
from avops_assets.partitions import COHORTS
from resources import AvopsHome


@dg.sensor(
    name="review_returns_sensor",
    target=dg.AssetSelection.assets(CURATED_SETS, RELEASED_SETS),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a curated-set rebuild for each cohort whose reviewers returned OpenLABEL files since the last tick.",
)
def review_returns_sensor(context: dg.SensorEvaluationContext, avops_home: AvopsHome) -> dg.SensorResult:
    cursor = LandingCursor.from_json(context.cursor)
    new, advanced = scan_new(review_root(avops_home.layout()) / "returns", cursor)
    known = set(context.instance.get_dynamic_partitions(COHORTS))
    cohorts = sorted(c for c in new if c in known)
    if not cohorts:
        return dg.SensorResult(skip_reason="no new review returns", cursor=advanced.to_json())
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"reviews:{c}:{advanced.watermark_ns}", partition_key=c,
                                    tags={"avops/trigger": "review_returns", "avops/returns": str(len(new[c]))}) for c in cohorts],
        cursor=advanced.to_json(),
    )
