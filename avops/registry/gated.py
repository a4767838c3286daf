"""One way for a gated candidate to leave ``candidate``: blocked with its failing gates, or validated and released."""

from __future__ import annotations

from avops.audit import log as audit
from avops.registry.models import ModelRegistry, ModelVersion

PRODUCTION = "production"


def settle(registry: ModelRegistry, version: ModelVersion, gates: list[dict], evidence_sha256: str, what: str,
           release_reason: str, actor: str, run_id: str | None = None, audit_data: dict | None = None) -> ModelVersion:
    """Log the gate result, then move a candidate to ``blocked`` (naming each blocking gate) or through
    ``validated`` to ``released`` and the scope's ``production`` alias. Gates are dicts with ``gate``,
    ``reason`` and ``blocks``; ``what`` names them in the reasons (e.g. "maintenance gates")."""
    blocked = any(g["blocks"] for g in gates)
    audit.record(registry, audit.GATE_RESULT, f"{version.name}/v{version.version}",
                 {**(audit_data or {}), "evidence_sha256": evidence_sha256, "blocked": blocked,
                  "gates": [{k: g.get(k) for k in ("gate", "status", "blocks", "value", "threshold")} for g in gates]}, actor, run_id)
    if version.stage == "candidate":
        if blocked:
            why = "; ".join(f"{g['gate']}: {g['reason']}" for g in gates if g["blocks"])
            return registry.transition(version.name, version.version, "blocked", actor,
                                       f"{what} failed ({why}); evidence sha256:{evidence_sha256}", run_id)
        registry.transition(version.name, version.version, "validated", actor, f"{what} passed; evidence sha256:{evidence_sha256}", run_id)
        version = registry.transition(version.name, version.version, "released", actor, release_reason, run_id)
    if version.stage == "released":
        registry.set_alias(version.name, version.cohort, PRODUCTION, version.version, actor, f"newest {version.name} model that passed its {what}",
                           run_id)
    return version
