"""Rollouts: a staged canary rollout per published package, advanced by the rollout sensor."""

import dagster as dg

from avops.ota.rollback import previous_image
from avops.rollout import controller
from avops.rollout.policy import load_rollout_policy
from avops.rollout.store import RolloutStore
from avops_assets.defs.curation.assets import PROPAGATE
from avops_assets.defs.ota.assets import PACKAGES
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, FleetRegistryResource, ModelRegistryResource

ROLLOUTS = dg.AssetKey(["ota", "rollouts"])


@dg.asset(key=ROLLOUTS, deps=[PACKAGES], kinds={"json"}, group_name="ota", partitions_def=cohort_partitions, code_version="1",
          automation_condition=PROPAGATE)
def rollouts(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource,
             model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """Start the staged rollout of each component the cohort's newest package changed: only the first wave's vehicles may install it.

    Components roll out independently (a component whose engine did not change keeps its rollout).

    `rollout_sensor` then judges each wave on signed, post-boot ECU version reports and advances,
    pauses or rolls back (config/rollout.yaml). State and every transition: the model registry's database.
    """
    home = avops_home.layout()
    cohort = fleet.load().cohort(context.partition_key)
    store = RolloutStore(model_registry.open())
    policy = load_rollout_policy()
    started = []
    for component in controller.components(home, cohort.id):  # perception on the ADAS ECU, maintenance on the gateway
        entry = controller.director_entry(home, cohort.id, component)
        rid = str(entry.unrecognized_fields.get("custom", {}).get("rollout_id"))
        try:
            r = store.get(rid)
        except KeyError:
            r = controller.start(home, store, cohort.id, component, cohort.vehicle_ids(), policy,
                                 previous_image(home, cohort.id, component, entry.hashes["sha256"]))
        started.append({"rollout_id": r.rollout_id, "component": component, "waves": r.waves, "status": r.status,
                        "wave": r.wave, "wave_vehicles": r.wave_vehicles()})
    return dg.MaterializeResult(metadata={"rollouts": dg.MetadataValue.json(started)})
