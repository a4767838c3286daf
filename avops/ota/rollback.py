"""Per-component rollback: point one component of a cohort back to its previous image.

TUF metadata never goes back in version, so a rollback is a roll-forward to old content: the
director publishes a new targets version that names the previous image with a higher release
counter. Only that component's entry changes; every other component's target is untouched.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from avops.audit import log as audit
from avops.home import HomeLayout
from avops.ota.uptane import Uptane, release_history, release_log
from avops.store import atomic_write_bytes


class RollbackError(RuntimeError):
    pass


@dataclass
class RolledBack:
    cohort: str
    component: str
    from_path: str
    to_path: str
    to_sha256: str
    release_counter: int
    seconds: float
    untouched: list[str]
    from_model_version: int | None
    to_model_version: int | None
    rollout_id: str = ""


def previous_image(home: HomeLayout, cohort: str, component: str, current_sha256: str) -> str | None:
    """The sha256 of the image the cohort had before ``current_sha256`` (what a rollout rolls back to)."""
    earlier = [e["sha256"] for e in release_history(home, cohort) if e["component"] == component and e["sha256"] != current_sha256]
    return earlier[-1] if earlier else None


def rollback(home: HomeLayout, cohort: str, component: str, reason: str) -> RolledBack:
    """Re-direct ``component`` of ``cohort`` to the image it had before the current one."""
    t0 = time.perf_counter()
    events = [e for e in release_history(home, cohort) if e["component"] == component]
    if not events:
        raise RollbackError(f"{cohort} has never received {component}: nothing to roll back")
    current = events[-1]
    earlier = [e for e in events[:-1] if e["sha256"] != current["sha256"]]
    if not earlier:
        raise RollbackError(f"{cohort} has only one {component} image ({current['path']}): there is no previous one to go back to")
    target = earlier[-1]
    ota = Uptane(home)
    image = ota.image()
    if target["path"] not in image.targets(f"{component}-{target['path'].split('/')[1]}").targets:
        raise RollbackError(f"the image repository no longer lists {target['path']}: re-publish it before rolling back")
    director = ota.director(cohort)
    entries = director.targets().targets
    cur = entries.get(current["path"])
    if cur is None:
        raise RollbackError(f"the {cohort} director does not list {current['path']} any more: state diverged, run `avops ota status`")
    custom = dict(cur.unrecognized_fields.get("custom", {}))
    custom.pop("vehicles", None)  # the previous image is for every vehicle, whatever wave a rollout had reached
    counter = max(int(t.unrecognized_fields.get("custom", {}).get("release_counter", 0))
                  for t in entries.values() if t.path.startswith(f"{component}/")) + 1
    others = sorted(p for p in entries if not p.startswith(f"{component}/"))
    data = (image.targets_dir / target["path"].rsplit("/", 1)[0] / f"{target['sha256']}.{target['path'].rsplit('/', 1)[1]}").read_bytes()
    rollout_id = f"rollback-{cohort}-{component}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    director.add_target(target["path"], data, custom={**custom, "release_counter": counter, "rollout_id": rollout_id},
                        replaces=(current["path"],))
    director.publish()
    seconds = time.perf_counter() - t0
    log = release_log(home, cohort)
    entry = {"at": datetime.now(timezone.utc).isoformat(), "rollout_id": rollout_id, "component": component, "path": target["path"],
             "sha256": target["sha256"], "length": target["length"], "release_counter": counter,
             "model_version": target.get("model_version"), "kind": "rollback", "reason": reason, "from_path": current["path"]}
    atomic_write_bytes(log, log.read_bytes() + json.dumps(entry, sort_keys=True).encode() + b"\n")
    return RolledBack(cohort, component, current["path"], target["path"], target["sha256"], counter, seconds, others,
                      current.get("model_version"), target.get("model_version"), rollout_id)


def record_in_registry(registry, rb: RolledBack, actor: str, reason: str, model: str | None = None) -> None:
    """The version rolled back to is released again and becomes production; the current one becomes rolled_back.

    The rollback itself (what was re-directed, to which digest, how fast) goes to the audit log.
    """
    audit.record(registry, audit.ROLLBACK, f"{rb.cohort}/{rb.component}",
                 {"cohort": rb.cohort, "component": rb.component, "from_path": rb.from_path, "to_path": rb.to_path,
                  "to_sha256": rb.to_sha256, "release_counter": rb.release_counter, "seconds": rb.seconds,
                  "untouched": rb.untouched, "reason": reason}, actor)
    model = model or rb.component  # a component is released as the model of the same name
    if rb.component != model or rb.from_model_version is None or rb.to_model_version is None:
        return
    why = f"OTA rollback of {rb.component} for {rb.cohort} ({rb.from_path} -> {rb.to_path}): {reason}"
    cur, back = registry.get(model, rb.from_model_version), registry.get(model, rb.to_model_version)
    if back.stage in ("validated", "rolled_back"):
        registry.transition(model, back.version, "released", actor, why)
    registry.set_alias(model, rb.cohort, "production", back.version, actor, why)
    if cur.stage == "released" and cur.version != back.version:
        registry.transition(model, cur.version, "rolled_back", actor, why)
