"""The avops code location: every asset, check, sensor and resource, assembled once."""


import os
from pathlib import Path

import dagster as dg
from dagster.components import load_from_defs_folder

from avops_assets.jobs import (MAIN_JOB, battery_chemistry_job, battery_fleet_job, executor, federated_round_job, gpu_job, inspection_retrain_job,
                               main_job, maintenance_retrain_job, occupant_job)
from resources import AvopsHome, DatasetVersioning, FleetRegistryResource, LineRegistryResource, ModelRegistryResource, ReviewTeam
from sensors import (battery_drift_sensor, bms_landing_sensor, drift_sensor, fp_rate_sensor, gpu_routing_sensor, landing_zone_sensor, line_change_sensor,
                     maintenance_retrain_schedule, review_returns_sensor, rollout_sensor)

__all__ = ["MAIN_JOB", "defs"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent

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
            "model_registry": registry, "lines": LineRegistryResource()}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        load_from_defs_folder(project_root=PROJECT_ROOT),
        dg.Definitions(resources=resources(), sensors=[landing_zone_sensor, review_returns_sensor, gpu_routing_sensor, rollout_sensor,
                                                       drift_sensor, line_change_sensor, fp_rate_sensor, bms_landing_sensor,
                                                       battery_drift_sensor, automation],
                       schedules=[maintenance_retrain_schedule], jobs=[main_job, gpu_job, maintenance_retrain_job, inspection_retrain_job, battery_fleet_job,
                             battery_chemistry_job(), occupant_job, federated_round_job()],
                       executor=executor()),
    )


def resolved_main_job() -> dg.JobDefinition:
    """The main job with its resources bound: what ``reconstructable`` needs for the multiprocess executor."""
    return defs().resolve_job_def(MAIN_JOB)
