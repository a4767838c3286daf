"""Training: checkpoints, evaluation behind blocking safety gates, validation, shadow mode, incident library."""

import dagster as dg

from avops.training import pipeline
from avops.training.checkpoints import load_train_config
from avops.training.gates import load_gate_policy
from avops.training.report import curve_chart, gate_chart, rate_chart, slice_chart
from avops_assets.defs.curation.assets import CURATED_SETS, PROPAGATE, RELEASED_SETS, _latest_metadata
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, DatasetVersioning, ModelRegistryResource

CHECKPOINTS = dg.AssetKey(["training", "checkpoints"])
EVALUATION = dg.AssetKey(["training", "evaluation"])
VALIDATED = dg.AssetKey(["training", "validated_models"])
SHADOW = dg.AssetKey(["training", "shadow"])
INCIDENTS = dg.AssetKey(["training", "incident_library"])

COMMON = dict(group_name="training", partitions_def=cohort_partitions, code_version=pipeline.TRAINING_VERSION,
              automation_condition=PROPAGATE)


def _actor(context) -> str:
    return f"dagster:{context.job_name}"


@dg.asset(key=CHECKPOINTS, deps=[RELEASED_SETS], kinds={"pytorch"}, **COMMON)
def checkpoints(context: dg.AssetExecutionContext, avops_home: AvopsHome, dataset_versioning: DatasetVersioning,
                model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """A perception checkpoint trained on the cohort's released curated set, registered as a candidate.

    Reads the train split at the dataset commit `curation/released_sets` recorded; the weights
    are stored content-addressed (deterministic for a seed) with a provenance record: dataset
    commit and manifest digest, code revision, every hyperparameter, library versions, curve.
    """
    cohort = context.partition_key
    ref = _latest_metadata(context, RELEASED_SETS, cohort, "dataset_version")
    cfg = load_train_config()
    code = {"dagster_code_version": pipeline.TRAINING_VERSION, "dagster_run_id": context.run_id}
    r = pipeline.train(avops_home.layout(), dataset_versioning.open(), model_registry.open(), cohort, ref, cfg, _actor(context),
                       context.run_id, code)
    prov = r.checkpoint.provenance
    return dg.MaterializeResult(
        metadata={
            "checkpoint_sha256": r.checkpoint.digest,
            "provenance_sha256": r.checkpoint.provenance_digest,
            "registry_version": r.version.version,
            "registry_stage": r.version.stage,
            "dataset_commit": r.dataset_commit,
            "dataset_manifest_sha256": prov["dataset"]["manifest_sha256"],
            "input_files_sha256": dg.MetadataValue.json(prov["dataset"]["files_read"]),
            "git_sha": prov["code"]["git_sha"],
            "code_version": pipeline.TRAINING_VERSION,
            "hyperparameters": dg.MetadataValue.json(prov["hyperparameters"]),
            "seed": prov["seed"],
            "libraries": dg.MetadataValue.json(prov["libraries"]),
            "train_frames": r.train_frames,
            "train_seconds": round(r.seconds, 1),
            "training_curve": dg.MetadataValue.md(curve_chart(r.checkpoint.model.training_curve)),
        },
        data_version=dg.DataVersion(r.checkpoint.digest),
    )


@dg.asset(key=INCIDENTS, deps=[CURATED_SETS], kinds={"xml"}, **COMMON)
def incident_library(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """Review cases marked as incidents, added to the library as OpenSCENARIO 1.2 scenarios with their frames.

    Each scenario (`incidents/<id>/scenario.xosc`) is validated against the OpenSCENARIO XSD;
    every candidate of every cohort is replayed on the whole library.
    """
    home = avops_home.layout()
    new, size = pipeline.harvest_incidents(home, context.partition_key)
    return dg.MaterializeResult(metadata={
        "new_incidents": dg.MetadataValue.json([{"id": i.id, "description": i.description, "frames": len(i.frames),
                                                 "scenario_sha256": i.scenario_sha256} for i in new]),
        "library_size": size,
        "library_path": dg.MetadataValue.path(str(home.root / "incidents")),
    })


@dg.asset(key=EVALUATION, deps=[CHECKPOINTS, INCIDENTS], kinds={"pytorch"}, **COMMON)
def evaluation(context: dg.AssetExecutionContext, avops_home: AvopsHome, dataset_versioning: DatasetVersioning,
               model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The candidate on the test split per ODD slice (with 95% lower bounds), against production, and on every incident.

    The safety gates of `config/safety_gates.yaml` are blocking checks on this asset: one failing
    gate (or an incident production handled and the candidate misses) stops validation and
    everything downstream. The evidence is stored content-addressed for the dossier.
    """
    cohort = context.partition_key
    version = int(_latest_metadata(context, CHECKPOINTS, cohort, "registry_version"))
    policy = load_gate_policy()
    r = pipeline.evaluate(avops_home.layout(), dataset_versioning.open(), model_registry.open(), cohort, version, policy,
                          _actor(context), context.run_id)
    inc = r.replay
    return dg.MaterializeResult(
        metadata={
            "evidence_sha256": r.evidence_sha256,
            "candidate_version": r.candidate.version,
            "candidate_sha256": r.candidate.artifact_sha256,
            "production_version": r.production.version if r.production else None,
            "dataset_commit": r.manifest.body["dataset_commit"],
            "test_frames": len(r.candidate_eval.frames),
            "blocked": r.blocked,
            "blocking_gates": dg.MetadataValue.json([g.gate for g in r.blocking]),
            "gates": dg.MetadataValue.md(gate_chart(f"Safety gates, {cohort}", r.gates)),
            "slice_metrics": dg.MetadataValue.md(slice_chart("Recall per ODD slice (candidate)", r.candidate_eval.slices)),
            "incidents_replayed": len(inc),
            "incidents_passed": int(inc["passed"].sum()) if len(inc) else 0,
            "incident_regressions": dg.MetadataValue.json(r.regressions),
            "input_manifest_sha256": r.manifest.digest,
        },
        data_version=dg.DataVersion(r.evidence_sha256),
    )


@dg.asset(key=VALIDATED, deps=[EVALUATION], kinds={"json"}, **COMMON)
def validated_models(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The candidate promoted to `validated` in the model registry: only reached when every blocking gate passed.

    Engines and OTA packages build from here, so a blocked candidate is never compiled.
    """
    cohort = context.partition_key
    m, evidence = pipeline.current_evaluation(avops_home.layout(), cohort)
    if evidence["blocked"]:  # the checks block this step in a run; this guards a manual materialization too
        raise dg.Failure(f"{cohort}: candidate v{evidence['candidate']['version']} is blocked by its safety gates "
                         f"(evidence sha256:{m.body['evidence_sha256']})")
    v = pipeline.validate(model_registry.open(), evidence["candidate"]["version"], m.body["evidence_sha256"], _actor(context), context.run_id)
    return dg.MaterializeResult(metadata={"model": pipeline.MODEL, "version": v.version, "stage": v.stage,
                                          "checkpoint_sha256": v.artifact_sha256, "evidence_sha256": m.body["evidence_sha256"]},
                                data_version=dg.DataVersion(v.artifact_sha256))


@dg.asset(key=SHADOW, deps=[CHECKPOINTS], kinds={"pytorch"}, **COMMON)
def shadow(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The candidate beside the cohort's production model on its most recent fleet drives, unlabeled.

    Disagreement per ODD slice shows where a rollout would change behaviour; the disagreeing
    frames feed the data engine's selection (`curation/review_queue`) in its next round.
    """
    cohort = context.partition_key
    version = int(_latest_metadata(context, CHECKPOINTS, cohort, "registry_version"))
    r = pipeline.shadow(avops_home.layout(), model_registry.open(), cohort, version, load_gate_policy().slices)
    if r.manifest is None:
        why = "no production model for this cohort yet" if r.production is None else "the candidate is the production model"
        return dg.MaterializeResult(metadata={"status": f"nothing to compare: {why}"})
    f = r.frames
    top = f.sort_values("shadow_disagreement", ascending=False).head(10)
    return dg.MaterializeResult(
        metadata={
            "production_version": r.production.version,
            "candidate_version": version,
            "frames_compared": len(f),
            "disagreeing_frames": int(f["disagrees"].sum()),
            "disagreement_rate": float(f["disagrees"].mean()) if len(f) else 0.0,
            "disagreement_by_slice": dg.MetadataValue.md(rate_chart("Candidate vs production: disagreement per ODD slice", r.rates)),
            "top_disagreements": dg.MetadataValue.json(top[["drive_id", "frame_index", "object_sha256", "shadow_disagreement"]].to_dict("records")),
            "manifest_sha256": r.manifest.digest,
        },
        data_version=dg.DataVersion(r.manifest.digest),
    )
