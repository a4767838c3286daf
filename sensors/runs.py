"""What the retrain sensors ask the instance: is a run of this job for this partition already on its way?"""

import dagster as dg

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def in_flight(instance: dg.DagsterInstance, job: str, partition: str) -> bool:
    """A queued or running run of ``job`` for ``partition``: one retrain at a time, never a storm."""
    return bool(instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=ACTIVE, tags={"dagster/partition": partition}), limit=1))
