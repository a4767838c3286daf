"""Advance active rollouts on the vehicles' signed version reports (wait, advance, complete, pause, roll back)."""

import os

import dagster as dg

from avops.rollout.vehicle_keys import registered_keys
from avops.home import layout
from avops.registry import ModelRegistry
from avops.rollout import controller
from avops.rollout.inbox import collect
from avops.rollout.policy import load_rollout_policy
from avops.rollout.store import RolloutStore


@dg.sensor(name="rollout_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def rollout_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    home = layout()
    url = os.environ.get("AVOPS_REGISTRY_URL")
    if not url and not (home.root / "registry" / "models.db").exists():
        return dg.SkipReason("no model registry yet")
    store = RolloutStore(ModelRegistry(url) if url else ModelRegistry.local(home))
    policy, keys = load_rollout_policy(), registered_keys(home)
    actions = []
    for r in store.active():
        r2, action, v = controller.step(home, store, r, collect(home, r.rollout_id), keys, policy)
        actions.append(f"{r.rollout_id}: {action} (wave {r2.wave + 1}/{len(r2.waves)}, healthy {len(v.healthy)}/{v.expected}, "
                       f"failed {len(v.failed)}, missing {len(v.missing)})")
        context.log.info(actions[-1])
    return dg.SkipReason("; ".join(actions) or "no active rollout")
