"""The avops code location: every asset, check, sensor and resource, assembled once."""


import os
from pathlib import Path

import dagster as dg
from dagster.components import load_from_defs_folder

from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, DatasetVersioning, FleetRegistryResource, ModelRegistryResource, ReviewTeam
from sensors import landing_zone_sensor, review_returns_sensor

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB = "avops_main"

# The main job: the whole asset graph (with its checks) for one cohort.
main_job = dg.define_asset_job(MAIN_JOB, selection=dg.AssetSelection.all(), partitions_def=cohort_partitions)

# TensorRT targets build on a GPU executor: this job carries the tags that route its runs there
# (the queued run coordinator limits it to the GPU slots; on Kubernetes the pod asks for a GPU).
GPU_JOB = "compile_engines_gpu"
GPU_TAGS = {
    "avops/executor": "gpu",
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
}
gpu_job = dg.define_asset_job(GPU_JOB, selection=dg.AssetSelection.keys(dg.AssetKey(["compile", "engines"])),
                              partitions_def=cohort_partitions, tags=GPU_TAGS)

# Propagation inside the graph is declarative (eager & blocking checks passed), evaluated by this sensor.
automation = dg.AutomationConditionSensorDefinition(
    "avops_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)


def resources() -> dict[str, dg.ConfigurableResource]:
    """Embedded defaults; a deployment overrides them through environment variables."""
    env = os.environ
    versioning = DatasetVersioning(
        backend=env.get("AVOPS_DATASET_BACKEND", "embedded"),
        repository=env.get("AVOPS_DATASET_REPOSITORY", "curated-sets"),
        lakefs_endpoint=env.get("LAKEFS_ENDPOINT", ""),
        access_key_id=env.get("LAKEFS_ACCESS_KEY_ID", ""),
        secret_access_key=env.get("LAKEFS_SECRET_ACCESS_KEY", ""),
        storage_namespace=env.get("LAKEFS_STORAGE_NAMESPACE", ""),
    )
    review = ReviewTeam(mode=env.get("AVOPS_REVIEW_MODE", "simulated"), delay_seconds=float(env.get("AVOPS_REVIEW_DELAY_S", "0")))
    registry = ModelRegistryResource(url=env.get("AVOPS_REGISTRY_URL", ""))
    return {"avops_home": AvopsHome(), "fleet": FleetRegistryResource(), "dataset_versioning": versioning, "review_team": review,
            "model_registry": registry}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        load_from_defs_folder(project_root=PROJECT_ROOT),
        dg.Definitions(resources=resources(), sensors=[landing_zone_sensor, review_returns_sensor, automation], jobs=[main_job, gpu_job]),
    )
