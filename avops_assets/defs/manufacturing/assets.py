"""Manufacturing: AOI inspection data and the inspection model per assembly line."""

import dagster as dg

from avops.manufacturing import pipeline
from avops.manufacturing.data import DATA_KEY, publish, read_line
from avops.manufacturing.lines import config_changes
from avops.maintenance.report import gates_markdown
from avops_assets.partitions import line_partitions
from resources import AvopsHome, LineRegistryResource, ModelRegistryResource

INSPECTION_DATA = dg.AssetKey(DATA_KEY.split("/"))
INSPECTION_MODELS = dg.AssetKey(["manufacturing", "inspection_models"])
FIRST = dg.AutomationCondition.on_missing() & dg.AutomationCondition.all_deps_blocking_checks_passed()


@dg.asset(key=INSPECTION_DATA, group_name="manufacturing", partitions_def=line_partitions, code_version="1",
          automation_condition=FIRST, kinds={"parquet"}, tags={"stage": "ingest"})
def inspection_data(context: dg.AssetExecutionContext, avops_home: AvopsHome, lines: LineRegistryResource) -> dg.MaterializeResult:
    """Every complete AOI shift of the line (images content-addressed, the configuration the line
    reported) joined with the rework station's and the quality audit's verdicts. Unreadable shifts,
    images that do not match their digest and bad verdict rows are quarantined with the reason."""
    line = lines.load().line(context.partition_key)
    store = avops_home.object_store()
    data = read_line(avops_home.layout(), line.id, store)
    m = publish(avops_home.layout(), store, line.id, data)
    for q in data.quarantined:
        context.log.warning(f"quarantined {q['what']}: {q['reason']}")
    p = data.parts
    return dg.MaterializeResult(
        metadata={"manifest_sha256": m.digest, "dataset_version": m.digest, "shifts": len(data.shifts), "parts": len(p),
                  "labelled": int(p["label"].notna().sum()), "defects_confirmed": int((p["label"] == 1).sum()),
                  "configurations": dg.MetadataValue.json(data.configs), "quarantined": len(data.quarantined),
                  "input_sha256": dg.MetadataValue.json({s["shift_id"]: s["manifest_sha256"] for s in data.shifts})},
        data_version=dg.DataVersion(m.digest),
    )


@dg.asset(key=INSPECTION_MODELS, deps=[INSPECTION_DATA], group_name="manufacturing", partitions_def=line_partitions,
          code_version=pipeline.INSPECTION_VERSION, automation_condition=FIRST, kinds={"pytorch"}, tags={"stage": "training"})
def inspection_models(context: dg.AssetExecutionContext, avops_home: AvopsHome, lines: LineRegistryResource,
                      model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The line's AOI defect classifier, trained on the audited and reworked parts of the line's
    current configuration, judged on held-out parts (defect recall lower bound, false-alarm upper
    bound: `config/lines.yaml`), and deployed to the line's AOI station when it passes."""
    line = lines.load().line(context.partition_key)
    registry = model_registry.open()
    before = pipeline.production(registry, line.id)
    r = pipeline.train_line(avops_home.layout(), registry, line, f"dagster:{context.job_name}", context.run_id)
    changed = config_changes(before.lineage.get("line_config", {}), r.config) if before else []
    ev = r.evaluation
    return dg.MaterializeResult(
        metadata={"model": pipeline.MODEL, "version": r.version.version, "stage": r.version.stage,
                  "trigger": context.run.tags.get("avops/trigger", "manual"), "trigger_reason": context.run.tags.get("avops/reason", ""),
                  "config_digest": r.config_digest, "config_changes": dg.MetadataValue.json(changed),
                  "checkpoint_sha256": r.checkpoint_sha256, "evidence_sha256": r.evidence_sha256, "train_parts": r.train_parts,
                  "defect_recall": dg.MetadataValue.float(ev.recall), "false_alarm_rate": dg.MetadataValue.float(ev.false_alarm_rate),
                  "gates": dg.MetadataValue.md(gates_markdown([{**g, "gate": f"{line.id}.{g['gate']}"} for g in r.gates]))},
        data_version=dg.DataVersion(r.checkpoint_sha256),
    )
