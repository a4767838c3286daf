"""Jobs: the whole graph per cohort, retrains, and the GPU job that builds TensorRT engines on a GPU executor."""

import os

import dagster as dg

from avops_assets.partitions import battery_fleet_partitions, cohort_partitions, line_partitions

MAIN_JOB = "avops_main"


def executor() -> dg.ExecutorDefinition | None:
    """``AVOPS_EXECUTOR``: ``multiprocess`` (default: Dagster's executor, a process per step, switchable per run
    by run config) or ``in_process`` (one process for the whole run: on two cores it starts faster and imports
    torch once)."""
    name = os.environ.get("AVOPS_EXECUTOR", "multiprocess")
    if name not in ("multiprocess", "in_process"):
        raise ValueError(f"AVOPS_EXECUTOR={name!r}: use multiprocess or in_process")
    return dg.in_process_executor if name == "in_process" else None


PRELOAD = ["avops_assets.definitions"]  # torch, onnxruntime, dagster and the whole code location


def run_defaults() -> dict | None:
    """With the multiprocess executor, steps fork from a server that has already imported the code location.

    A step process otherwise re-imports torch, Dagster and every asset module (seconds each, times
    every step of the graph); forked from a preloaded server it starts at once. Run config from the
    launchpad can still change it.
    """
    if os.environ.get("AVOPS_EXECUTOR", "multiprocess") != "multiprocess":
        return None
    return {"execution": {"config": {"multiprocess": {"start_method": {"forkserver": {"preload_modules": PRELOAD}}}}}}


GPU_JOB = "compile_engines_gpu"
ENGINES = dg.AssetKey(["compile", "engines"])

# The main job: the whole vehicle asset graph (with its checks) for one cohort. Manufacturing lines
# are their own partitions and job.
# battery assets are partitioned by battery fleet or chemistry: their own jobs below
BATTERY_ASSETS = dg.AssetSelection.groups("battery") | dg.AssetSelection.assets(
    dg.AssetKey(["features", "battery_embedding"]), dg.AssetKey(["features", "battery_cells"]),
    dg.AssetKey(["features", "battery_golden_vectors"]))
# occupant monitoring: cohort steps (consented sessions, studio model, gated model) and federated rounds
# (cohort x round) are their own jobs; the main job ships the gated model (compile/dms_engines onwards).
OCCUPANT_ASSETS = dg.AssetSelection.groups("occupant", "federated")
main_job = dg.define_asset_job(MAIN_JOB, selection=dg.AssetSelection.all() - dg.AssetSelection.groups("manufacturing") - BATTERY_ASSETS
                               - OCCUPANT_ASSETS,
                               partitions_def=cohort_partitions, config=run_defaults())

# TensorRT targets build on a GPU executor: these tags route a run there (the queued run coordinator
# limits avops/executor=gpu runs to the GPU slots; on Kubernetes the run's pod asks for a GPU).
GPU_TAGS = {
    "avops/executor": "gpu",
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
}
gpu_job = dg.define_asset_job(GPU_JOB, selection=dg.AssetSelection.keys(ENGINES), partitions_def=cohort_partitions, tags=GPU_TAGS)

# A cohort's maintenance retrain: fresh feature tables, the model (behind its gates), the drift report.
RETRAIN_JOB = "maintenance_retrain"
MAINTENANCE = [dg.AssetKey(["features", "telemetry"]), dg.AssetKey(["maintenance", "models"]), dg.AssetKey(["maintenance", "drift"])]
maintenance_retrain_job = dg.define_asset_job(RETRAIN_JOB, selection=dg.AssetSelection.keys(*MAINTENANCE),
                                              partitions_def=cohort_partitions)

# A line's inspection retrain: re-read its AOI shifts and verdicts, retrain behind the gates.
INSPECTION_JOB = "inspection_retrain"
inspection_retrain_job = dg.define_asset_job(
    INSPECTION_JOB, selection=dg.AssetSelection.keys(dg.AssetKey(["manufacturing", "inspection_data"]),
                                                     dg.AssetKey(["manufacturing", "inspection_models"])),
    partitions_def=line_partitions)

# Battery: per fleet (BMS logs -> features -> drift) and per chemistry (embedding, golden vectors, models).
BATTERY_FLEET_JOB = "battery_fleet"
BATTERY_CHEMISTRY_JOB = "battery_chemistry"
battery_fleet_job = dg.define_asset_job(
    BATTERY_FLEET_JOB, selection=dg.AssetSelection.assets(
        dg.AssetKey(["battery", "reference_tests"]), dg.AssetKey(["features", "battery_cells"]), dg.AssetKey(["battery", "drift"])),
    partitions_def=battery_fleet_partitions)


def battery_chemistry_job():
    from avops_assets.partitions import chemistry_partitions

    return dg.define_asset_job(
        BATTERY_CHEMISTRY_JOB, selection=dg.AssetSelection.assets(
            dg.AssetKey(["features", "battery_embedding"]), dg.AssetKey(["features", "battery_golden_vectors"]),
            dg.AssetKey(["battery", "soh_models"])),
        partitions_def=chemistry_partitions())


# Occupant monitoring: the cohort's consented sessions and studio model; one federated round; the gated model.
OCCUPANT_JOB = "occupant_cohort"
FEDERATED_ROUND_JOB = "federated_round"
occupant_job = dg.define_asset_job(OCCUPANT_JOB, selection=dg.AssetSelection.groups("occupant"), partitions_def=cohort_partitions)


def federated_round_job():
    from avops_assets.partitions import federated_round_partitions

    return dg.define_asset_job(FEDERATED_ROUND_JOB, selection=dg.AssetSelection.groups("federated"),
                               partitions_def=federated_round_partitions())
