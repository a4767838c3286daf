"""The rollout controller: plan waves, target them through the director, judge each wave on signed reports.

Targeting is per vehicle: the director's entry for the component carries a ``vehicles`` allowlist
that grows wave by wave (the verifier ignores an assignment that does not name its vehicle), and
is dropped when the rollout completes. Pausing stops the allowlist from growing; rolling back
re-directs the whole cohort to the previous image (``avops.ota.rollback``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from securesystemslib.signer import Key

from avops.home import HomeLayout
from avops.ota.rollback import rollback
from avops.ota.uptane import Uptane
from avops.rollout.policy import RolloutPolicy
from avops.rollout.reports import verify_report
from avops.rollout.store import Rollout, RolloutStore


def plan_waves(vehicles: list[str], policy: RolloutPolicy, rollout_id: str) -> tuple[list[str], list[int]]:
    """A stable pseudo-random vehicle order per rollout, and the cumulative vehicle count of each wave."""
    order = sorted(vehicles, key=lambda v: hashlib.sha256(f"{rollout_id}/{v}".encode()).hexdigest())
    n = len(order)
    counts: list[int] = []
    for w in policy.waves:
        c = min(n, max(policy.min_vehicles_per_wave, math.ceil(w * n)))
        if not counts or c > counts[-1]:
            counts.append(c)
    if counts[-1] != n:
        counts.append(n)
    return order, counts


def components(home: HomeLayout, cohort: str) -> list[str]:
    """The components the cohort's director assigns (one entry each)."""
    return sorted({p.split("/", 1)[0] for p in Uptane(home).director(cohort).targets().targets})


def director_entry(home: HomeLayout, cohort: str, component: str):
    entries = [t for p, t in Uptane(home).director(cohort).targets().targets.items() if p.startswith(f"{component}/")]
    if len(entries) != 1:
        raise ValueError(f"{cohort}: expected one director entry for {component}, found {len(entries)}")
    return entries[0]


def assign(home: HomeLayout, cohort: str, component: str, vehicles: list[str] | None) -> None:
    """Limit the component's director entry to ``vehicles`` (None: every vehicle of the cohort)."""
    director = Uptane(home).director(cohort)
    path = director_entry(home, cohort, component).path
    with director.edit_targets() as targets:
        custom = targets.targets[path].unrecognized_fields.setdefault("custom", {})
        if vehicles is None:
            custom.pop("vehicles", None)
        else:
            custom["vehicles"] = sorted(vehicles)
    director.publish()


def start(home: HomeLayout, store: RolloutStore, cohort: str, component: str, vehicles: list[str], policy: RolloutPolicy,
          previous_sha256: str | None, now: datetime | None = None) -> Rollout:
    """Begin a rollout of the component's current director entry: only the first wave may install it."""
    now = now or datetime.now(timezone.utc)
    entry = director_entry(home, cohort, component)
    custom = entry.unrecognized_fields.get("custom", {})
    rollout_id = str(custom.get("rollout_id"))
    order, counts = plan_waves(vehicles, policy, rollout_id)
    r = Rollout(rollout_id, cohort, component, entry.path, entry.hashes["sha256"], previous_sha256, order, counts, 0, "active",
                now.isoformat(), now.isoformat())
    store.create(r, {"waves": counts, "policy": policy.__dict__, "first_wave": r.wave_vehicles()})
    assign(home, cohort, component, r.wave_vehicles())
    return r


@dataclass
class WaveVerdict:
    expected: int
    healthy: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # reports that did not verify

    @property
    def success_rate(self) -> float:
        return len(self.healthy) / self.expected if self.expected else 0.0

    @property
    def error_rate(self) -> float:
        return len(self.failed) / self.expected if self.expected else 0.0


def evaluate(r: Rollout, envelopes: list[dict], keys: dict[str, Key], policy: RolloutPolicy) -> WaveVerdict:
    expected = r.wave_vehicles()
    verdict = WaveVerdict(len(expected))
    latest = {}
    for env in envelopes:
        report, why = verify_report(env, keys)
        if report is None:
            verdict.rejected.append(why)
            continue
        if report.rollout_id == r.rollout_id and report.vehicle_id in expected:
            if report.vehicle_id not in latest or report.at >= latest[report.vehicle_id].at:
                latest[report.vehicle_id] = report
    max_ms = float(policy.health.get("max_inference_ms", math.inf))
    for v in expected:
        rep = latest.get(v)
        if rep is None:
            verdict.missing.append(v)
        elif not rep.booted:
            verdict.failed[v] = "did not boot the new image"
        elif rep.installed_sha256 != r.target_sha256:
            verdict.failed[v] = f"booted image sha256 {str(rep.installed_sha256)[:12]} is not the rolled-out {r.target_sha256[:12]}"
        elif float(rep.health.get("inference_ms", math.inf)) > max_ms:
            verdict.failed[v] = f"inference {rep.health.get('inference_ms')} ms > {max_ms} ms"
        else:
            verdict.healthy.append(v)
    return verdict


def step(home: HomeLayout, store: RolloutStore, r: Rollout, envelopes: list[dict], keys: dict[str, Key], policy: RolloutPolicy,
         now: datetime | None = None) -> tuple[Rollout, str, WaveVerdict]:
    """Judge the current wave and act: wait, advance, complete, pause or roll back. Every action is recorded."""
    now = now or datetime.now(timezone.utc)
    if r.status != "active":
        return r, "inactive", WaveVerdict(0)
    v = evaluate(r, envelopes, keys, policy)
    detail = {"wave": r.wave, "expected": v.expected, "healthy": len(v.healthy), "failed": v.failed, "missing": v.missing,
              "rejected_reports": v.rejected, "success_rate": v.success_rate, "error_rate": v.error_rate}
    if v.error_rate >= policy.error_threshold:
        if policy.auto_rollback:
            rb = rollback(home, r.cohort, r.component, f"rollout {r.rollout_id} wave {r.wave}: error rate {v.error_rate:.2f}")
            r = store.update(r.rollout_id, "rolled_back", {**detail, "to_path": rb.to_path, "seconds": rb.seconds}, status="rolled_back")
            return r, "rolled_back", v
        return store.update(r.rollout_id, "paused", detail, status="paused"), "paused", v
    soaked = (now - datetime.fromisoformat(r.wave_started_at)).total_seconds() >= policy.soak_seconds
    if v.success_rate >= policy.success_threshold and soaked:
        if r.wave == len(r.waves) - 1:
            assign(home, r.cohort, r.component, None)
            return store.update(r.rollout_id, "completed", detail, status="complete"), "complete", v
        r = store.update(r.rollout_id, "wave_advanced", detail, wave=r.wave + 1, wave_started_at=now.isoformat())
        assign(home, r.cohort, r.component, r.wave_vehicles())
        return r, "advanced", v
    store.update(r.rollout_id, "waiting", detail)
    return r, "waiting", v
