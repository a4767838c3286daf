"""Occupant monitoring: consented sessions, the studio model, federated rounds (cohort x round), the gated model.

Cabin frames of fleet vehicles never appear here: the rounds only see what vehicles upload (model
updates), and their blocking checks prove it. The consented sessions (studio recordings, the
test-vehicle programme) are the only cabin frames the cloud holds.
"""

import dagster as dg

from avops.occupant import federated, pipeline
from avops.occupant.config import load_occupant_config
from avops.occupant.report import budget_markdown, findings_markdown, slices_markdown
from avops_assets.partitions import cohort_partitions, federated_round_partitions
from resources import AvopsHome, DatasetVersioning, ModelRegistryResource

CONSENTED = dg.AssetKey(pipeline.CONSENTED_KEY.split("/"))
STUDIO = dg.AssetKey(pipeline.STUDIO_KEY.split("/"))
ROUNDS = dg.AssetKey(pipeline.ROUNDS_KEY.split("/"))
DMS_MODEL = dg.AssetKey(pipeline.MODEL_KEY.split("/"))
GROUP = "occupant"
rounds_partitions = federated_round_partitions()
BY_COHORT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="cohort")
EAGER = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def _cohort_round(context) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["cohort"], keys["round"]


@dg.asset(key=CONSENTED, group_name=GROUP, partitions_def=cohort_partitions, code_version=pipeline.OCCUPANT_VERSION, kinds={"numpy"},
          tags={"stage": "ingest"})
def consented_sessions(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """Cabin sessions recorded with consent (`cabin_consented/<cohort>/*.npz`): studio recordings (the first
    model's training data) and the test-vehicle programme (the held-out evaluation pool). A bad file is
    quarantined with its reason; the others go on."""
    m, bad = pipeline.ingest_consented(avops_home.layout(), load_occupant_config(), context.partition_key, avops_home.object_store())
    for q in bad:
        context.log.warning(f"quarantined {q.file}: {q.reason}")
    return dg.MaterializeResult(metadata={"splits": dg.MetadataValue.json(m.body["splits"]), "quarantined": len(bad),
                                          "input_sha256": dg.MetadataValue.json(m.body["inputs"]), "frames_sha256": m.body["frames_sha256"],
                                          "manifest_sha256": m.digest}, data_version=dg.DataVersion(m.digest))


@dg.asset(key=STUDIO, deps=[CONSENTED], group_name=GROUP, partitions_def=cohort_partitions, code_version=pipeline.OCCUPANT_VERSION,
          kinds={"pytorch"}, tags={"stage": "training"})
def studio_model(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """The driver-state network trained centrally on the consented studio sessions: where round r001 starts."""
    m = pipeline.train_studio(avops_home.layout(), load_occupant_config(), context.partition_key, avops_home.object_store())
    return dg.MaterializeResult(metadata={"weights_sha256": m.body["weights_sha256"], "frames": m.body["frames"],
                                          "input_sha256": dg.MetadataValue.json({"consented_sessions": m.body["consented_manifest"]}),
                                          "manifest_sha256": m.digest}, data_version=dg.DataVersion(m.digest))


@dg.asset(key=ROUNDS, deps=[dg.AssetDep(STUDIO, partition_mapping=BY_COHORT)], group_name="federated", partitions_def=rounds_partitions,
          code_version=pipeline.OCCUPANT_VERSION, kinds={"pytorch"}, tags={"stage": "training"})
def rounds(context: dg.AssetExecutionContext, avops_home: AvopsHome, dataset_versioning: DatasetVersioning) -> dg.MaterializeResult:
    """One federated round of a cohort (Flower): its vehicles train the previous round's global model on
    their own cabin frames with DP-SGD (Opacus) and upload model updates only; the cloud aggregates them.

    Records the participating vehicles (pseudonyms), the digest of every update, the clipping norm and
    noise multiplier, and the privacy budget spent so far (ε at δ) by two independent accountants.
    Vehicles that do not answer within the timeout are dropped; the round needs `min_participants`.
    Rounds run in order, and none builds on a round whose privacy checks failed."""
    cohort, rnd = _cohort_round(context)
    try:
        r = pipeline.run_federated_round(avops_home.layout(), load_occupant_config(), cohort, rnd, dataset_versioning.open())
    except (federated.RoundFailed, pipeline.OccupantDataMissing) as exc:
        raise dg.Failure(str(exc)) from exc
    b = r.manifest.body
    done = [m.body for m in pipeline.rounds_done(avops_home.layout(), load_occupant_config(), cohort, avops_home.object_store())]
    return dg.MaterializeResult(
        metadata={"participants": dg.MetadataValue.json(b["participants"]), "dropped": dg.MetadataValue.json(b["dropped"]),
                  "declined": dg.MetadataValue.json(b["declined"]), "update_sha256": dg.MetadataValue.json(b["update_digests"]),
                  "secure_aggregation": bool(b.get("secure_aggregation", False)), "clipping_norm": b["dp"]["max_grad_norm"], "noise_multiplier": b["dp"]["noise_multiplier"], "delta": b["dp"]["delta"],
                  "epsilon_spent_max": b["epsilon_max"], "epsilon_by_vehicle": dg.MetadataValue.json(b["epsilon"]),
                  "privacy_budget": dg.MetadataValue.md(budget_markdown(done)),
                  "audit_passed": b["audit"]["passed"], "audit_findings": dg.MetadataValue.md(findings_markdown(b["audit"]["findings"])),
                  "input_sha256": dg.MetadataValue.json({"initial_weights": b["initial_sha256"]}), "global_sha256": b["global_sha256"],
                  "uplink_log_sha256": b["uplink_log_sha256"], "seconds": b["seconds"], "manifest_sha256": r.manifest.digest},
        data_version=dg.DataVersion(r.manifest.digest))


@dg.asset(key=DMS_MODEL, deps=[dg.AssetDep(ROUNDS, partition_mapping=BY_COHORT), CONSENTED], group_name=GROUP,
          partitions_def=cohort_partitions, code_version=pipeline.OCCUPANT_VERSION, automation_condition=EAGER, kinds={"pytorch"},
          tags={"stage": "training"})
def dms_model(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The newest audited round's global model, judged per slice on the consenting test vehicles (age band,
    eyewear, face covering, seating, illumination, and each distraction type) and released as the
    cohort's `production` occupant model when its slice gates pass (blocking check `occupant_slice_gates`)."""
    try:
        r = pipeline.promote(avops_home.layout(), model_registry.open(), load_occupant_config(), context.partition_key,
                             f"dagster:{context.job_name}", context.run_id)
    except (federated.RoundFailed, pipeline.OccupantDataMissing) as exc:
        raise dg.Failure(str(exc)) from exc
    return dg.MaterializeResult(
        metadata={"model": pipeline.MODEL, "version": r.version.version, "stage": r.version.stage, "round": r.round,
                  "checkpoint_sha256": r.version.artifact_sha256, "evidence_sha256": r.evidence_sha256,
                  "accuracy": float(r.table.loc[0, "accuracy"]), "slices": dg.MetadataValue.md(slices_markdown(r.table, r.gates)),
                  "input_sha256": dg.MetadataValue.json(r.version.lineage)},
        data_version=dg.DataVersion(r.evidence_sha256))
