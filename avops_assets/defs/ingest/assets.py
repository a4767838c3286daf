"""Ingest: landed drive logs -> validated, content-addressed signal and sensor tables."""


import dagster as dg

from avops.ingest.ingest import ASSET_KEY, INGEST_VERSION, ingest_partition
from avops.ingest.quarantine import quarantine_records
from avops.ingest.report import odd_exposure_markdown, quarantine_markdown
from avops_assets.partitions import cohort_partitions
from avops_assets.retries import IO_RETRY, transient_only
from resources import AvopsHome, FleetRegistryResource

RAW_DRIVES = dg.AssetKey(ASSET_KEY.split("/"))


@dg.asset(
    key=RAW_DRIVES,
    group_name="ingest",
    partitions_def=cohort_partitions,
    code_version=INGEST_VERSION,
    kinds={"mcap", "parquet"},
    tags={"stage": "ingest"},
    retry_policy=IO_RETRY,
)
def raw_drives(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource) -> dg.MaterializeResult:
    """Raw drives of one vehicle cohort, decoded from the landing zone.

    Reads every MCAP (camera, LiDAR, radar, CAN, vehicle context) and CAN-only BLF/ASC/MF4
    log under `landing/<cohort>/`, decodes CAN with the cohort's DBC, stores frames and
    point clouds content-addressed, and publishes Parquet tables (drives, camera_frames,
    lidar_sweeps, radar_detections, odd_context, one `can__<message>` table per DBC
    message) behind a manifest. Unreadable files are quarantined with a reason; the rest
    of the partition is still ingested.
    """
    cohort = fleet.load().cohort(context.partition_key)
    home = avops_home.layout()
    with transient_only():  # S3 down: retried; anything else: fails at once
        result = ingest_partition(home, cohort, progress=lambda status, path: context.log.debug(f"{status}: {path}"))
    m = result.manifest
    formats: dict[str, int] = {}
    for i in result.inputs:
        formats[i["format"]] = formats.get(i["format"], 0) + 1
    if result.quarantined:
        context.log.warning(f"{len(result.quarantined)} file(s) quarantined: " + "; ".join(f"{q.original} ({q.reason})" for q in result.quarantined))
    return dg.MaterializeResult(
        metadata={
            "manifest_sha256": m.digest,
            "dataset_version": m.digest,
            "code_version": INGEST_VERSION,
            "dbc": cohort.dbc,
            "dbc_sha256": m.body["dbc_sha256"],
            "drives": len(result.inputs),
            "files_by_format": formats,
            "files_ingested": result.ingested,
            "files_reused_from_cache": result.reused,
            "files_quarantined": len(result.quarantined),
            "files_in_quarantine_total": len(quarantine_records(home.quarantine, cohort.id)),
            "quarantined": dg.MetadataValue.md(quarantine_markdown(result.quarantined)),
            "input_sha256": dg.MetadataValue.json(result.inputs),
            "output_tables": dg.MetadataValue.json({n: {"sha256": t["sha256"], "rows": t["rows"]} for n, t in m.tables.items()}),
            "odd_exposure": dg.MetadataValue.md(odd_exposure_markdown(home, m)),
            "storage": dg.MetadataValue.path(str(home.objects)),
        },
        data_version=dg.DataVersion(m.digest),
    )
