"""The one way a gated model's blocking check reads its verdict: the newest registered version's stored evidence.

Maintenance, battery and inspection models compute their gates once, when they are trained, and
store the evidence content-addressed; their checks only read it, so the UI, the registry and the
dossier agree.
"""

import dagster as dg

from resources import AvopsHome, ModelRegistryResource


def newest_gate_result(avops_home: AvopsHome, model_registry: ModelRegistryResource, model: str, scope: str,
                       what: str) -> dg.AssetCheckResult:
    """Passed when no gate of the newest ``model`` version of ``scope`` (cohort, chemistry, line) blocks."""
    versions = model_registry.open().list(model, cohort=scope)
    if not versions:
        return dg.AssetCheckResult(passed=False, description=f"no {what} model registered for {scope}")
    newest = max(versions, key=lambda v: v.version)
    evidence = avops_home.object_store().get_json(newest.lineage["evidence_sha256"])
    failed = [g for g in evidence["gates"] if g["blocks"]]
    return dg.AssetCheckResult(
        passed=not failed,
        description=(f"v{newest.version}: all gates held" if not failed else
                     f"v{newest.version} blocked: " + "; ".join(f"{g['gate']} {g['reason']}" for g in failed)),
        metadata={"version": newest.version, "stage": newest.stage, "evidence_sha256": newest.lineage["evidence_sha256"],
                  "gates": dg.MetadataValue.json(evidence["gates"])})
