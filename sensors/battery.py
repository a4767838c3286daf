"""Battery fleets: new BMS logs -> ingest + features + drift; aging that is not the expected aging -> one retrain.

`bms_landing_sensor` scans `bms/<fleet>/` with the landing-zone cursor (a tick over thousands of
logs stays cheap) and registers a fleet the first time it delivers. `battery_drift_sensor`
looks again at a fleet only when its feature table changed, judges its new tests against the
aging its chemistry's production model was trained on (`avops.battery.drift`), and requests
one retrain of that chemistry's model: with a cooldown, never while one is queued or running.
"""

import json
import time

import dagster as dg

from avops.battery import pipeline
from avops.battery.config import load_battery_config
from avops.landing import LandingCursor, scan_new
from avops_assets.defs.battery.assets import CELLS, DRIFT, REFERENCE_TESTS, SOH_MODELS
from avops_assets.jobs import BATTERY_CHEMISTRY_JOB, BATTERY_FLEET_JOB
from avops_assets.partitions import BATTERY_FLEETS, battery_fleet_partitions
from resources import AvopsHome, ModelRegistryResource
from sensors.runs import in_flight

@dg.sensor(name="bms_landing_sensor", job_name=BATTERY_FLEET_JOB, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="New BMS reference-test logs of a battery fleet -> one run: ingest, feature table, drift report.")
def bms_landing_sensor(context: dg.SensorEvaluationContext, avops_home: AvopsHome) -> dg.SensorResult:
    cursor = LandingCursor.from_json(context.cursor)
    new, advanced = scan_new(avops_home.layout().bms, cursor)
    if not new:
        return dg.SensorResult(skip_reason="no new BMS logs", cursor=advanced.to_json())
    config = load_battery_config()
    unknown = sorted(set(new) - set(config.fleets))
    if unknown:
        context.log.warning(f"BMS logs of fleets missing from {config.path}: {unknown}; add them there to ingest them")
    fleets = sorted(set(new) & set(config.fleets))
    existing = set(context.instance.get_dynamic_partitions(BATTERY_FLEETS))
    to_add = [f for f in fleets if f not in existing]
    requests = [dg.RunRequest(run_key=f"{f}:{advanced.watermark_ns}", partition_key=f, asset_selection=[REFERENCE_TESTS, CELLS, DRIFT],
                              tags={"avops/trigger": "bms_landing", "avops/new_files": str(len(new[f]))}) for f in fleets]
    return dg.SensorResult(run_requests=requests, cursor=advanced.to_json(),
                           dynamic_partitions_requests=[battery_fleet_partitions.build_add_request(to_add)] if to_add else [],
                           **({"skip_reason": f"only unknown fleets: {unknown}"} if not requests else {}))


@dg.sensor(name="battery_drift_sensor", job_name=BATTERY_CHEMISTRY_JOB, minimum_interval_seconds=120,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Per battery fleet: new tests whose aging departs from the expected trajectory -> one retrain of the "
                       "chemistry's SoH/RUL model (cooldown, one at a time).")
def battery_drift_sensor(context: dg.SensorEvaluationContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    home, store = avops_home.layout(), avops_home.object_store()
    config, registry = load_battery_config(), model_registry.open()
    requests, notes, now = [], [], time.time()
    requested: set[str] = set()
    for fleet in sorted(context.instance.get_dynamic_partitions(BATTERY_FLEETS)):
        if fleet not in config.fleets:
            continue
        ref = store.read_ref(home.refs, pipeline.FEATURES_KEY, fleet)
        table = ref["manifest"] if ref else ""
        seen = state.get("fleets", {}).get(fleet)
        if not table or seen == table:
            continue
        out = pipeline.fleet_drift(home, registry, config, fleet)
        if out is None:
            notes.append(f"{fleet}: no production model of its chemistry yet")
            continue  # not marked seen: decide once there is a model
        version, result = out
        state.setdefault("fleets", {})[fleet] = table
        chem = result.chemistry
        if not result.drifted:
            notes.append(f"{fleet}: {result.verdict} ({'; '.join(result.reasons)[:200]})")
            continue
        last = state.get("requested", {}).get(chem, 0)
        if now - last < config.drift.cooldown_hours * 3600:
            notes.append(f"{fleet}: drifted, but {chem} was retrained {(now - last) / 3600:.1f} h ago (cooldown)")
        elif chem in requested or in_flight(context.instance, BATTERY_CHEMISTRY_JOB, chem):
            notes.append(f"{fleet}: drifted; a {chem} retrain is already on its way")
        else:
            requested.add(chem)
            state.setdefault("requested", {})[chem] = now
            requests.append(dg.RunRequest(run_key=f"battery-drift:{chem}:{table[:16]}", partition_key=chem, asset_selection=[SOH_MODELS],
                                          tags={"avops/trigger": "drift", "avops/reason": f"{fleet}: " + "; ".join(result.reasons)[:480],
                                                "avops/production_version": str(version.version)}))
            notes.append(f"{fleet}: drift in {', '.join(result.drifted_features)} -> {chem} retrain requested")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(state, sort_keys=True),
                           **({} if requests else {"skip_reason": "; ".join(notes)[:1000] or "no battery fleet changed"}))
