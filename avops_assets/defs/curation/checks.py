"""Blocking checks of the data engine: valid OpenLABEL, no split leakage, the slices the gates need."""

import json

import dagster as dg

from avops import datasets
from avops.curation import openlabel, pipeline
from avops.curation.policy import load_policy
from avops_assets.defs.curation.assets import auto_labels, curated_sets
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome

CHECK_OPENLABEL = "openlabel_documents_valid"
CHECK_LEAKAGE = "splits_disjoint_by_drive"
CHECK_SLICES = "slices_meet_gate_policy"


def _manifest(avops_home: AvopsHome, key: str, partition: str) -> datasets.Manifest:
    m = datasets.current(avops_home.object_store(), avops_home.layout().refs, key, partition)
    if m is None:
        raise dg.Failure(f"no published {key} for {partition}: materialize it first")
    return m


@dg.asset_check(asset=auto_labels, name=CHECK_OPENLABEL, blocking=True, partitions_def=cohort_partitions)
def openlabel_documents_valid(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """Every auto-label document validates against the official ASAM OpenLABEL 1.0 JSON schema."""
    m = _manifest(avops_home, pipeline.AUTO_LABELS, context.partition_key)
    store = avops_home.object_store()
    errors = {}
    for drive_id, digest in m.body["openlabel_documents"].items():
        problems = openlabel.validate_document(json.loads(store.get_bytes(digest, verify=True)))
        if problems:
            errors[drive_id] = problems[:5]
    return dg.AssetCheckResult(
        passed=not errors,
        description=f"{len(m.body['openlabel_documents']) - len(errors)} of {len(m.body['openlabel_documents'])} documents valid",
        metadata={"invalid_documents": dg.MetadataValue.json(errors), "manifest_sha256": m.digest},
    )


@dg.asset_check(asset=curated_sets, name=CHECK_LEAKAGE, blocking=True, partitions_def=cohort_partitions)
def splits_disjoint_by_drive(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """No drive contributes samples to more than one of train/val/test (ISO/PAS 8800 independence)."""
    m = _manifest(avops_home, pipeline.CURATED_SETS, context.partition_key)
    samples = datasets.read_table(avops_home.object_store(), m, "samples").to_pandas()
    shared = pipeline.leakage(samples)
    return dg.AssetCheckResult(
        passed=not shared,
        description="splits are disjoint by drive" if not shared else f"{len(shared)} drive(s) in several splits",
        metadata={"shared_drives": dg.MetadataValue.json(shared), "split_sizes": dg.MetadataValue.json(samples["split"].value_counts().to_dict()),
                  "dataset_commit": m.body["commit_id"]},
    )


@dg.asset_check(asset=curated_sets, name=CHECK_SLICES, blocking=True, partitions_def=cohort_partitions)
def slices_meet_gate_policy(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """Every ODD slice the safety gates need has at least its minimum number of samples (config/curation.yaml)."""
    m = _manifest(avops_home, pipeline.CURATED_SETS, context.partition_key)
    samples = datasets.read_table(avops_home.object_store(), m, "samples").to_pandas()
    short = pipeline.slice_shortfalls(samples, load_policy())
    return dg.AssetCheckResult(
        passed=not short,
        description="all required slices covered" if not short else f"too few samples in: {', '.join(short)}",
        metadata={"shortfalls": dg.MetadataValue.json(short), "coverage": dg.MetadataValue.json(m.body["coverage"])},
    )
