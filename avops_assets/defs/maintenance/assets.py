"""Maintenance: the predictive maintenance model per cohort, and the drift of the telemetry it reads."""

import dagster as dg

from avops.drift import monitor
from avops.drift.report import drift_markdown
from avops.maintenance import pipeline
from avops.maintenance.config import load_maintenance_config
from avops.maintenance.report import gates_markdown, predictions_markdown
from avops import datasets
from avops_assets.defs.features.assets import RAW_DRIVES, TELEMETRY
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, FleetRegistryResource, ModelRegistryResource

MODELS = dg.AssetKey(["maintenance", "models"])
DRIFT = dg.AssetKey(["maintenance", "drift"])

# A retrain is decided by the drift sensor or the schedule, never by every new drive; a new
# cohort's first model is trained as soon as its features exist.
FIRST_MODEL = dg.AutomationCondition.on_missing() & dg.AutomationCondition.all_deps_blocking_checks_passed()
REPORT = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


@dg.asset(key=MODELS, deps=[TELEMETRY], group_name="maintenance", partitions_def=cohort_partitions,
          code_version=pipeline.MAINTENANCE_VERSION, automation_condition=FIRST_MODEL, kinds={"numpy"},
          tags={"stage": "training"})
def models(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource,
           model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The cohort's predictive maintenance model (brake pads), trained, judged and registered.

    Labels are workshop measurements (the dealer system's `service_orders.csv`) known at the
    feature table's cut-off; evidence is leave-one-vehicle-out per component; the gates of
    `config/maintenance.yaml` decide, and a model that passes becomes the cohort's
    `production` maintenance model. The checkpoint carries the drift reference (the telemetry it
    was trained on, sorted once).
    """
    cohort = fleet.load().cohort(context.partition_key)
    r = pipeline.train(avops_home.layout(), model_registry.open(), cohort, load_maintenance_config(),
                       f"dagster:{context.job_name}", context.run_id)
    store = avops_home.object_store()
    predictions = datasets.read_table(store, r.evaluation, "brake_pads_predictions").to_pandas() if "brake_pads_predictions" in r.evaluation.tables else None
    if r.rejected_orders:
        context.log.warning(f"{len(r.rejected_orders)} workshop record(s) quarantined: "
                            + "; ".join(f"line {x['line']}: {x['problem']}" for x in r.rejected_orders[:5]))
    trigger = context.run.tags.get("avops/trigger", "manual")
    return dg.MaterializeResult(
        metadata={
            "model": pipeline.MODEL, "version": r.version.version, "stage": r.version.stage,
            "trigger": trigger, "trigger_reason": context.run.tags.get("avops/reason", ""),
            "checkpoint_sha256": r.checkpoint_sha256, "evidence_sha256": r.evidence_sha256, "reference_sha256": r.reference_sha256,
            "input_sha256": dg.MetadataValue.json(r.version.lineage),
            "trained_until": dg.MetadataValue.timestamp(r.trained_until),
            "rows": r.rows, "labelled_rows": r.labelled, "workshop_rows_quarantined": len(r.rejected_orders),
            "gates": dg.MetadataValue.md(gates_markdown(r.gates)),
            "held_out_estimates": dg.MetadataValue.md(predictions_markdown(predictions) if predictions is not None else ""),
        },
        data_version=dg.DataVersion(r.checkpoint_sha256),
    )


@dg.asset(key=DRIFT, deps=[RAW_DRIVES, MODELS], group_name="maintenance", partitions_def=cohort_partitions, code_version="1",
          automation_condition=REPORT, kinds={"evidently"}, tags={"stage": "monitoring"})
def drift(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource,
          model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """Telemetry drift since the production maintenance model's training, for people.

    The decision (KS per quantity against the reference sorted at training time, BH, effect
    and sample floors) is the one the drift sensor takes; this asset also renders Evidently's
    data-drift report (HTML, stored content-addressed) and the field accuracy on workshop
    measurements that arrived since.
    """
    home = avops_home.layout()
    cohort = fleet.load().cohort(context.partition_key)
    config = load_maintenance_config()
    v = monitor.evaluate(home, model_registry.open(), cohort, config)
    store = avops_home.object_store()
    verdict_sha = store.put_json(v.to_dict())
    html_sha = monitor.evidently_report(home, cohort, v)
    html_path = str(store.path(html_sha)) if html_sha else ""
    html_md = (f"Evidently data-drift report: `{html_path}` (sha256 {html_sha})" if html_sha
               else "no production model or no new telemetry: no Evidently report")
    field = v.accuracy
    return dg.MaterializeResult(
        metadata={
            "production_version": v.model_version or 0, "retrain_recommended": v.retrain, "reasons": "; ".join(v.reasons),
            "drifted_quantities": dg.MetadataValue.json(v.drifted), "verdict_sha256": verdict_sha,
            "raw_manifest": v.raw_manifest or "", "reference_sha256": v.reference_sha256 or "",
            "new_samples": dg.MetadataValue.json(v.current_rows),
            "drift": dg.MetadataValue.md(drift_markdown(v.columns) if v.columns else "no quantity tested"),
            "field_accuracy": dg.MetadataValue.json(None if field is None else {"measurements": field.measurements, "mae_mm": field.mae_mm,
                                                                                 "threshold_mm": field.threshold_mm, "degraded": field.degraded}),
            "evidently_report": dg.MetadataValue.md(html_md),
            **({"evidently_html": dg.MetadataValue.path(html_path)} if html_path else {}),
            "seconds": round(v.seconds, 3),
        },
    )
