"""Manufacturing lines -> inspection retrains: a reported configuration change, or a rising false-alarm rate.

Both sensors register lines from the line registry as partitions, never request a retrain for
a line whose retrain is queued or running, and tag every request with why it fired.
"""

import json
import time

import dagster as dg

from avops.manufacturing import pipeline
from avops.manufacturing.lines import config_changes, config_digest
from avops.manufacturing.monitor import false_alarm_rate, newest_shift, verdict_files_digest
from avops_assets.jobs import INSPECTION_JOB, inspection_retrain_job
from avops_assets.partitions import LINES, line_partitions
from resources import AvopsHome, LineRegistryResource, ModelRegistryResource
from sensors.runs import in_flight

FP_COOLDOWN_S = 4 * 3600


def _in_flight(instance: dg.DagsterInstance, line: str) -> bool:
    return in_flight(instance, INSPECTION_JOB, line)


def _new_partitions(instance: dg.DagsterInstance, line_ids: list[str]) -> list:
    missing = [i for i in line_ids if i not in set(instance.get_dynamic_partitions(LINES))]
    return [line_partitions.build_add_request(missing)] if missing else []


@dg.sensor(name="line_change_sensor", job=inspection_retrain_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="A line whose newest AOI shift reports a configuration (part variant, camera pose, lighting) other than "
                       "the one its production inspection model was trained on is retrained, once per change.")
def line_change_sensor(context: dg.SensorEvaluationContext, avops_home: AvopsHome, lines: LineRegistryResource,
                       model_registry: ModelRegistryResource) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    registry, home, reg = model_registry.open(), avops_home.layout(), lines.load()
    requests, notes = [], []
    for line in reg.lines:
        shift = newest_shift(home, line.id)
        prod = pipeline.production(registry, line.id)
        if shift is None or prod is None:
            notes.append(f"{line.id}: {'no AOI shift' if shift is None else 'no production model'} yet")
            continue
        digest = config_digest(shift["line_config"])
        if digest == prod.lineage.get("config_digest") or cursor.get(line.id) == digest:
            continue
        if _in_flight(context.instance, line.id):
            notes.append(f"{line.id}: configuration changed, a retrain is already running")
            continue
        changes = config_changes(prod.lineage.get("line_config", {}), shift["line_config"])
        reason = f"line configuration changed in {shift['shift_id']}: " + "; ".join(changes)
        requests.append(dg.RunRequest(run_key=f"line-change:{line.id}:{digest}", partition_key=line.id,
                                      tags={"avops/trigger": "line_change", "avops/reason": reason[:500],
                                            "avops/production_version": str(prod.version)}))
        cursor[line.id] = digest
        context.log.info(f"{line.id}: {reason}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True),
                           dynamic_partitions_requests=_new_partitions(context.instance, reg.line_ids),
                           **({} if requests else {"skip_reason": "; ".join(notes) or "no line reported a configuration change"}))


@dg.sensor(name="fp_rate_sensor", job=inspection_retrain_job, minimum_interval_seconds=300,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="A line whose production inspection model's confirmed false-alarm rate (parts it flagged that the rework "
                       "station overturned, over the line's window) exceeds the line's threshold is retrained; cooldown 4 h.")
def fp_rate_sensor(context: dg.SensorEvaluationContext, avops_home: AvopsHome, lines: LineRegistryResource,
                   model_registry: ModelRegistryResource) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    registry, home, reg = model_registry.open(), avops_home.layout(), lines.load()
    now, requests, notes = time.time(), [], []
    for line in reg.lines:
        state = cursor.get(line.id, {})
        files = verdict_files_digest(home, line.id)
        prod = pipeline.production(registry, line.id)
        if prod is None or files == state.get("files"):
            continue
        fa = false_alarm_rate(home, line.id, prod.version, line.fp_window_parts)
        state["files"] = files
        if fa.flagged >= line.fp_window_parts and fa.rate > line.fp_rate_max:
            reason = (f"false-alarm rate {fa.rate:.2f} > {line.fp_rate_max:g}: rework overturned {fa.overturned} of the last "
                      f"{fa.flagged} parts v{prod.version} flagged")
            if now - state.get("requested_at", 0) < FP_COOLDOWN_S:
                notes.append(f"{line.id}: {reason}, cooling down")
            elif _in_flight(context.instance, line.id):
                notes.append(f"{line.id}: {reason}, a retrain is already running")
                state.pop("files")
            else:
                requests.append(dg.RunRequest(run_key=f"fp-rate:{line.id}:v{prod.version}:{files}", partition_key=line.id,
                                              tags={"avops/trigger": "fp_rate", "avops/reason": reason[:500],
                                                    "avops/production_version": str(prod.version)}))
                state["requested_at"] = now
                context.log.info(f"{line.id}: {reason}")
        else:
            notes.append(f"{line.id}: false-alarm rate {fa.rate:.2f} over {fa.flagged} judged flags (max {line.fp_rate_max:g})")
        cursor[line.id] = state
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True),
                           dynamic_partitions_requests=_new_partitions(context.instance, reg.line_ids),
                           **({} if requests else {"skip_reason": "; ".join(notes) or "no new rework verdicts"}))
