"""Drift and field accuracy per cohort -> a maintenance retrain run; and the periodic retrain schedule.

The sensor only looks again at a cohort when its telemetry (the ingested manifest) or its
workshop export changed since the last tick, so a quiet fleet costs a few file reads. A
retrain is requested at most once per cohort per cooldown, never while one of that cohort's
retrains is queued or running, and each request names why it fired.
"""

import json
import os
import time

import dagster as dg

from avops.drift import monitor
from avops.ingest.ingest import ASSET_KEY as RAW_KEY
from avops.maintenance.config import load_maintenance_config
from avops.store import sha256_file
from avops_assets.jobs import RETRAIN_JOB, maintenance_retrain_job
from avops_assets.partitions import COHORTS
from resources import AvopsHome, FleetRegistryResource, ModelRegistryResource
from sensors.runs import in_flight


def retrain_in_flight(instance: dg.DagsterInstance, cohort: str) -> bool:
    return in_flight(instance, RETRAIN_JOB, cohort)


def _inputs(avops_home: AvopsHome, cohort: str) -> str:
    """What the verdict depends on: the ingested manifest and the workshop export."""
    home = avops_home.layout()
    ref = avops_home.object_store().read_ref(home.refs, RAW_KEY, cohort)
    raw = ref["manifest"] if ref else ""
    orders = home.workshop / cohort / "service_orders.csv"
    return f"{raw}:{sha256_file(orders) if orders.exists() else ''}"


@dg.sensor(name="drift_sensor", job=maintenance_retrain_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Per cohort: telemetry drift since the production maintenance model's training, or its field accuracy "
                       "on new workshop measurements, requests one retrain (with a cooldown, one at a time).")
def drift_sensor(context: dg.SensorEvaluationContext, avops_home: AvopsHome, fleet: FleetRegistryResource,
                 model_registry: ModelRegistryResource) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    config = load_maintenance_config()
    registry, fleet_registry = model_registry.open(), fleet.load()
    now = time.time()
    requests, notes = [], []
    for cohort_id in sorted(context.instance.get_dynamic_partitions(COHORTS)):
        if cohort_id not in fleet_registry.cohort_ids:
            continue
        state = cursor.get(cohort_id, {})
        inputs = _inputs(avops_home, cohort_id)
        if state.get("inputs") == inputs:
            continue
        verdict = monitor.evaluate(avops_home.layout(), registry, fleet_registry.cohort(cohort_id), config)
        context.log.info(f"{cohort_id}: {'; '.join(verdict.reasons)} ({verdict.seconds:.2f} s)")
        if verdict.model_version is None:
            notes.append(f"{cohort_id}: {verdict.reasons[0]}")
            continue  # look again when there is a model: inputs are not marked seen
        state = {**state, "inputs": inputs}
        if verdict.retrain:
            cooldown_left = state.get("requested_at", 0) + config.drift.cooldown_hours * 3600 - now
            if cooldown_left > 0:
                notes.append(f"{cohort_id}: would retrain ({verdict.reasons[0]}) but cooling down for {cooldown_left / 3600:.1f} h")
            elif retrain_in_flight(context.instance, cohort_id):
                notes.append(f"{cohort_id}: a retrain is already queued or running")
                state.pop("inputs")  # decide again once it finished
            else:
                trigger = "drift" if verdict.drifted else "field_accuracy"
                requests.append(dg.RunRequest(
                    run_key=f"{trigger}:{cohort_id}:{inputs[:16]}:{verdict.model_version}", partition_key=cohort_id,
                    tags={"avops/trigger": trigger, "avops/reason": "; ".join(verdict.reasons)[:500],
                          "avops/production_version": str(verdict.model_version)}))
                state["requested_at"] = now
                notes.append(f"{cohort_id}: retrain requested ({trigger})")
        else:
            notes.append(f"{cohort_id}: {verdict.reasons[0]}")
        cursor[cohort_id] = state
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True),
                           **({} if requests else {"skip_reason": "; ".join(notes) or "no cohort's telemetry or workshop records changed"}))


@dg.schedule(name="maintenance_retrain_schedule", job=maintenance_retrain_job,
             cron_schedule=os.environ.get("AVOPS_RETRAIN_CRON", "0 3 * * 1"), default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Retrains every cohort's maintenance model periodically, drift or not: fleets age "
                         "(AVOPS_RETRAIN_CRON, default Mondays 03:00).")
def maintenance_retrain_schedule(context: dg.ScheduleEvaluationContext):
    stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    for cohort in sorted(context.instance.get_dynamic_partitions(COHORTS)):
        if retrain_in_flight(context.instance, cohort):
            continue
        yield dg.RunRequest(run_key=f"schedule:{cohort}:{stamp}", partition_key=cohort,
                            tags={"avops/trigger": "schedule", "avops/reason": f"periodic retrain ({stamp})"})
