"""Curation: teacher, auto-labels, review queue, versioned curated sets, releases and campaigns."""

import dagster as dg

from avops.audit import log as audit
from avops.curation import pipeline
from avops.curation.policy import load_policy
from avops.ingest.report import bar_chart
from avops.versioning.base import ConflictError
from avops_assets.defs.ingest.assets import RAW_DRIVES
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, DatasetVersioning, ModelRegistryResource, ReviewTeam

TEACHER = dg.AssetKey(["curation", "teacher"])
AUTO_LABELS = dg.AssetKey(["curation", "auto_labels"])
REVIEW_QUEUE = dg.AssetKey(["curation", "review_queue"])
CURATED_SETS = dg.AssetKey(["curation", "curated_sets"])
RELEASED_SETS = dg.AssetKey(["curation", "released_sets"])
CAMPAIGNS = dg.AssetKey(["curation", "campaigns"])

# Rebuild when an upstream partition changes, but never on top of a failed blocking check.
PROPAGATE = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
COMMON = dict(group_name="curation", partitions_def=cohort_partitions, code_version=pipeline.CURATION_VERSION,
              automation_condition=PROPAGATE)


def _curve_markdown(curve: list[dict]) -> str:
    per_epoch: dict[int, list[float]] = {}
    for p in curve:
        per_epoch.setdefault(int(p["epoch"]), []).append(float(p["loss"]))
    return bar_chart("Training loss per epoch (ensemble mean)", {f"epoch {e:02d}": sum(v) / len(v) for e, v in sorted(per_epoch.items())}, "")


@dg.asset(key=TEACHER, deps=[RAW_DRIVES], kinds={"pytorch"}, **COMMON)
def teacher(context: dg.AssetExecutionContext, avops_home: AvopsHome, review_team: ReviewTeam) -> dg.MaterializeResult:
    """The auto-labeling teacher: a PyTorch detector ensemble trained on a seed set labeled by reviewers.

    Seed frames are sampled stratified by ODD, sent to review as OpenLABEL tasks, and the
    reviewed labels train the ensemble. Held-out seed drives measure it against a prior-box
    baseline. Weights are stored content-addressed; an identical seed set reuses them.
    """
    home = avops_home.layout()
    cohort = context.partition_key
    try:
        r = pipeline.build_teacher(home, cohort, load_policy(), lambda: review_team.process_pending(home, cohort))
    except pipeline.ReviewPending as exc:
        raise dg.Failure(str(exc)) from exc
    return dg.MaterializeResult(
        metadata={
            "teacher_sha256": r.digest,
            "reused_cached_weights": r.reused,
            "seed_frames_reviewed": r.seed_frames,
            "train_frames": r.train_frames,
            "heldout_f1": r.heldout_metrics.get("f1"),
            "heldout_map50": r.heldout_metrics.get("map50"),
            "baseline_f1": r.baseline_metrics.get("f1"),
            "baseline_map50": r.baseline_metrics.get("map50"),
            "config": dg.MetadataValue.json(r.config),
            "training_curve": dg.MetadataValue.md(_curve_markdown(r.training_curve)),
            "input_manifest_sha256": r.source_manifest,
        },
        data_version=dg.DataVersion(r.digest),
    )


@dg.asset(key=AUTO_LABELS, deps=[TEACHER], kinds={"pytorch", "json"}, **COMMON)
def auto_labels(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """Every camera frame of the cohort labeled by the teacher, as ASAM OpenLABEL 1.0 (one document per drive).

    Boxes, classes, confidences, class entropy, margin and ensemble agreement per object;
    uncertainty and disagreement per frame; a Parquet index (`frames`, `objects`) for DuckDB.
    """
    home = avops_home.layout()
    cohort = context.partition_key
    digest = _latest_metadata(context, TEACHER, cohort, "teacher_sha256")
    r = pipeline.auto_label(home, cohort, digest)
    m = r.manifest
    frames = m.tables["frames"]["rows"]
    return dg.MaterializeResult(
        metadata={
            "manifest_sha256": m.digest,
            "teacher_sha256": digest,
            "frames_labeled": frames,
            "objects": m.tables["objects"]["rows"],
            "frames_per_second": round(r.frames_per_second, 1),
            "openlabel_documents": dg.MetadataValue.json(r.documents),
            "input_manifest_sha256": m.body["source_manifest"],
        },
        data_version=dg.DataVersion(m.digest),
    )


def _latest_metadata(context, key: dg.AssetKey, partition: str, field: str):
    event = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not event:
        raise dg.Failure(f"{key.to_user_string()} has no materialization for {partition}: materialize it first")
    value = event[0].asset_materialization.metadata.get(field)
    if value is None:
        raise dg.Failure(f"{key.to_user_string()}[{partition}] did not record {field}")
    return value.value


@dg.asset(key=REVIEW_QUEUE, deps=[AUTO_LABELS], kinds={"json"}, **COMMON)
def review_queue(context: dg.AssetExecutionContext, avops_home: AvopsHome, review_team: ReviewTeam) -> dg.MaterializeResult:
    """The frames worth labeling under the cohort's budget, and the uncertain ones sent to human review.

    Near-duplicates dropped, quotas for rare ODD slices (night, fog, snow, roadworks, VRUs),
    a random share, then uncertainty and ensemble disagreement. Every sample records its
    selection reasons; review tasks are exported as OpenLABEL to `review/tasks/<cohort>/`.
    """
    home = avops_home.layout()
    cohort = context.partition_key
    r = pipeline.queue_reviews(home, cohort, load_policy(), lambda: review_team.process_pending(home, cohort))
    return dg.MaterializeResult(
        metadata={
            "manifest_sha256": r.manifest.digest,
            "selected_frames": r.selected,
            "sent_to_review": r.to_review,
            "tasks_exported": r.tasks_exported,
            "selection_reasons": dg.MetadataValue.md(bar_chart("Selected frames by reason", {k: float(v) for k, v in r.reasons.items()}, "frames")),
            "input_manifest_sha256": r.manifest.body["auto_labels_manifest"],
        },
        data_version=dg.DataVersion(r.manifest.digest),
    )


@dg.asset(key=CURATED_SETS, deps=[REVIEW_QUEUE], kinds={"parquet", "json"}, **COMMON)
def curated_sets(context: dg.AssetExecutionContext, avops_home: AvopsHome, dataset_versioning: DatasetVersioning) -> dg.MaterializeResult:
    """The curated labeled set of a cohort, committed to the dataset repository on its own branch.

    Samples (drive, sensor, timestamp, frame digest, label version, selection reason, label
    source and reviewer), labels (reviewed labels override auto-labels), train/val/test
    splits disjoint by drive, label statistics and slice coverage. Blocking checks gate the
    merge into `main` (done by `curation/released_sets`).
    """
    home = avops_home.layout()
    cohort = context.partition_key
    r = pipeline.build_curated_set(home, cohort, load_policy(), dataset_versioning.open(), context.run_id)
    return dg.MaterializeResult(
        metadata={
            "manifest_sha256": r.manifest.digest,
            "dataset_commit": r.commit_id,
            "dataset_branch": r.branch,
            "samples": len(r.samples),
            "splits": dg.MetadataValue.json(r.split_sizes),
            "reviewed_returns_applied": r.returns_applied,
            "reviews_quarantined": len(r.returns_quarantined),
            "review_frames_rejected": len(r.rejected_frames),
            "slice_coverage": dg.MetadataValue.md(bar_chart("Samples per ODD slice", {k: float(v) for k, v in r.coverage.items()}, "samples")),
            "label_stats": dg.MetadataValue.md(bar_chart("Labels per class", {k: float(v) for k, v in r.label_stats.items()}, "boxes")),
            "input_manifest_sha256": r.manifest.body["source"]["review_queue"],
        },
        data_version=dg.DataVersion(r.commit_id),
    )


@dg.asset(key=RELEASED_SETS, deps=[CURATED_SETS], kinds={"json"}, **COMMON)
def released_sets(context: dg.AssetExecutionContext, avops_home: AvopsHome, dataset_versioning: DatasetVersioning,
                  model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The curated set merged into the dataset repository's `main`, once its blocking checks passed.

    The merge commit id is the dataset version training reads; a tag names it per cohort.
    """
    cohort = context.partition_key
    branch = _latest_metadata(context, CURATED_SETS, cohort, "dataset_branch")
    repo = dataset_versioning.open()
    merged = repo.merge(branch, "main", f"release curated set {cohort}", {"dagster_run_id": context.run_id, "cohort": cohort})
    tag = f"curated-{cohort}-{merged.id[:12]}"
    try:
        repo.tag(tag, merged.id)
    except ConflictError as exc:  # tags are immutable; the same release tagged again is not an error
        context.log.info(f"tag {tag} exists: {exc}")
    event = audit.record(model_registry.open(), audit.DATASET_COMMIT, f"curated-sets/{cohort}",
                         {"cohort": cohort, "commit": merged.id, "tag": tag, "merged_branch": branch,
                          "curated_manifest_sha256": _latest_metadata(context, CURATED_SETS, cohort, "manifest_sha256")},
                         f"dagster:{context.asset_key.to_user_string()}", context.run_id)
    return dg.MaterializeResult(metadata={"dataset_version": merged.id, "tag": tag, "merged_branch": branch, "audit_event": event},
                                data_version=dg.DataVersion(merged.id))


@dg.asset(key=CAMPAIGNS, deps=[REVIEW_QUEUE], kinds={"json"}, **COMMON)
def campaigns(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """A collection campaign for the ODD slices the cohort's selection lacks most, with its edge cases.

    Written to `campaigns/<cohort>/<id>.json`; `avops fleet simulate --campaign FILE` (or a real
    fleet's trigger-based logging) collects drives in those conditions.
    """
    home = avops_home.layout()
    cohort = context.partition_key
    campaign, cov = pipeline.campaign_for(home, cohort, load_policy())
    md = {"slice_coverage": dg.MetadataValue.md(bar_chart("Selected samples per slice", {k: float(v) for k, v in cov.items()}, "samples"))}
    if campaign is None:
        return dg.MaterializeResult(metadata={**md, "campaign": "none needed: every slice meets its target"})
    path = campaign.save(home.root / "campaigns")
    return dg.MaterializeResult(
        metadata={**md, "campaign_id": campaign.id, "campaign_file": dg.MetadataValue.path(str(path)),
                  "targets": dg.MetadataValue.json([t.__dict__ for t in campaign.targets])},
        data_version=dg.DataVersion(campaign.id),
    )
