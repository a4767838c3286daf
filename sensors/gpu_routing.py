"""Route a cohort whose engines need a GPU toolchain to the GPU queue, once.

When `compile/engines` fails in an ordinary run because the SoC's toolchain (TensorRT) cannot run
on that host, this sensor requests the same partition in `compile_engines_gpu`, whose tags put it
on a GPU executor. Failures of GPU runs themselves are not re-routed (no loops).
"""

import json

import dagster as dg

from avops_assets.jobs import GPU_TAGS, gpu_job, main_job

TOOLCHAIN_MISSING = "unavailable on this host"


def _tags() -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in GPU_TAGS.items()}


@dg.run_failure_sensor(name="gpu_routing_sensor", monitored_jobs=[main_job], request_job=gpu_job,
                       default_status=dg.DefaultSensorStatus.RUNNING)
def gpu_routing_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    if run.tags.get("avops/executor") == "gpu" or partition is None:
        return
    for event in context.get_step_failure_events():
        error = event.event_specific_data.error if event.event_specific_data else None
        if event.step_key == "compile__engines" and error is not None and TOOLCHAIN_MISSING in (error.message or ""):
            yield dg.RunRequest(run_key=f"gpu-route-{run.run_id}", partition_key=partition,
                                tags={**_tags(), "avops/routed_from_run": run.run_id})
            return
