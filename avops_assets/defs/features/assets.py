"""Features: telemetry feature tables per cohort, one definition computed offline and online."""

import dagster as dg

from avops.features.definitions import TELEMETRY_FEATURES
from avops.features.report import feature_markdown
from avops.features.tables import CODE_VERSION, FEATURES_KEY, build_feature_table
from avops.ingest.ingest import ASSET_KEY as RAW_KEY
from avops_assets.defs.curation.assets import PROPAGATE
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, FleetRegistryResource

TELEMETRY = dg.AssetKey(FEATURES_KEY.split("/"))
RAW_DRIVES = dg.AssetKey(RAW_KEY.split("/"))


@dg.asset(key=TELEMETRY, deps=[RAW_DRIVES], group_name="features", partitions_def=cohort_partitions, code_version=CODE_VERSION,
          automation_condition=PROPAGATE, kinds={"duckdb", "parquet"}, tags={"stage": "features"})
def telemetry(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """Telemetry features per vehicle and drive: brakes, wheel slip, temperatures, traction battery.

    Each feature is defined once (`avops/features/definitions.py`: entity, event time, trailing
    window, aggregation, versioned) and computed here offline with DuckDB over the ingested CAN
    tables, point in time correct: a row as of time t only aggregates samples in (t - window, t].
    The same definitions run online in the vehicle (`avops.features.online`); the blocking parity
    check proves the two agree. Editing a definition changes this asset's code version.
    """
    cohort = fleet.load().cohort(context.partition_key)
    ft = build_feature_table(avops_home.layout(), cohort)
    m = ft.manifest
    return dg.MaterializeResult(
        metadata={
            "manifest_sha256": m.digest,
            "dataset_version": m.digest,
            "input_sha256": dg.MetadataValue.json({RAW_KEY: ft.raw_manifest.digest}),
            "output_tables": dg.MetadataValue.json({n: {"sha256": t["sha256"], "rows": t["rows"]} for n, t in m.tables.items()}),
            "code_version": CODE_VERSION,
            "rows": ft.table.num_rows,
            "vehicles": len(set(ft.table["vehicle_id"].to_pylist())),
            "features": len(ft.resolved),
            "feature_versions": dg.MetadataValue.json(m.body["feature_versions"]),
            "unavailable_on_this_platform": dg.MetadataValue.json(ft.unavailable),
            "summary": dg.MetadataValue.md(feature_markdown(ft.table, [f for f in TELEMETRY_FEATURES if f.name not in ft.unavailable])),
        },
        data_version=dg.DataVersion(m.digest),
    )
