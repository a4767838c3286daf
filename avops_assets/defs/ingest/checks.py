"""Asset checks on `ingest/raw_drives`: stored bytes verify, tables match their schemas."""


import dagster as dg

from avops import datasets
from avops.ingest.checks import CheckOutcome, validate_schemas, verify_digests
from avops.ingest.ingest import ASSET_KEY
from avops_assets.defs.ingest.assets import raw_drives
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, FleetRegistryResource

CHECK_DIGESTS = "stored_tables_match_digests"
CHECK_SCHEMAS = "tables_match_pandera_schemas"
CHECK_RANGES = "can_signals_within_dbc_ranges"


def _manifest(avops_home: AvopsHome, partition: str) -> datasets.Manifest:
    home = avops_home.layout()
    m = datasets.current(avops_home.object_store(), home.refs, ASSET_KEY, partition)
    if m is None:
        raise dg.Failure(f"no published {ASSET_KEY} for cohort {partition}: materialize it first")
    return m


def _result(outcome: CheckOutcome, m: datasets.Manifest, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.summary,
        metadata={"manifest_sha256": m.digest, "details": dg.MetadataValue.json(outcome.details)},
    )


@dg.asset_check(asset=raw_drives, name=CHECK_DIGESTS, blocking=True, partitions_def=cohort_partitions)
def stored_tables_match_digests(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """Every published table still hashes to the sha256 its manifest records."""
    m = _manifest(avops_home, context.partition_key)
    return _result(verify_digests(avops_home.object_store(), m), m)


@dg.asset_check(asset=raw_drives, name=CHECK_SCHEMAS, blocking=True, partitions_def=cohort_partitions)
def tables_match_pandera_schemas(
    context: dg.AssetCheckExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource
) -> dg.AssetCheckResult:
    """Every table (drives, sensors, decoded CAN) passes its pandera schema: types, nulls, keys, digests."""
    m = _manifest(avops_home, context.partition_key)
    spec = fleet.load().cohort(context.partition_key).dbc_spec
    return _result(validate_schemas(avops_home.object_store(), m, spec, with_ranges=False), m)


@dg.asset_check(asset=raw_drives, name=CHECK_RANGES, blocking=False, partitions_def=cohort_partitions)
def can_signals_within_dbc_ranges(
    context: dg.AssetCheckExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource
) -> dg.AssetCheckResult:
    """Decoded signal values lie within the DBC's min/max (a warning: buses carry sentinel values)."""
    m = _manifest(avops_home, context.partition_key)
    spec = fleet.load().cohort(context.partition_key).dbc_spec
    return _result(validate_schemas(avops_home.object_store(), m, spec, with_ranges=True), m, dg.AssetCheckSeverity.WARN)
