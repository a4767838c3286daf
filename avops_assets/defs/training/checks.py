"""Safety gates as blocking asset checks, one per slice of config/safety_gates.yaml, plus incident replay."""

import dagster as dg

from avops.training import pipeline
from avops.training.gates import load_gate_policy
from avops_assets.defs.training.assets import evaluation
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome

CHECK_INCIDENTS = "incident_replay_no_regression"


def _evidence(avops_home: AvopsHome, cohort: str) -> tuple[str, dict]:
    try:
        m, evidence = pipeline.current_evaluation(avops_home.layout(), cohort)
    except LookupError as exc:
        raise dg.Failure(str(exc)) from exc
    return m.body["evidence_sha256"], evidence


def gate_check(name: str, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=evaluation, name=f"gate_{name}", blocking=True, partitions_def=cohort_partitions, description=description)
    def _check(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
        digest, evidence = _evidence(avops_home, context.partition_key)
        g = next((g for g in evidence["gates"] if g["gate"] == name), None)
        if g is None:
            return dg.AssetCheckResult(passed=False, description=f"gate {name!r} was not evaluated: rematerialize training/evaluation",
                                       metadata={"evidence_sha256": digest})
        severity = dg.AssetCheckSeverity.ERROR if g["blocks"] else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(
            passed=g["passed"], severity=severity,
            description=f"{name}: {g['metric']} {g['value'] if g['value'] is None else round(g['value'], 3)} "
                        f"(lower bound {g['lower_bound']:.3f}, threshold {g['threshold']}, {g['samples']} samples): {g['reason']}",
            metadata={**{k: v for k, v in g.items() if v is not None}, "evidence_sha256": digest,
                      "candidate_version": evidence["candidate"]["version"]},
        )

    return _check


def _gate_checks() -> list[dg.AssetChecksDefinition]:
    policy = load_gate_policy()
    out = []
    for g in policy.gates:
        s = g.slice
        where = ", ".join(f"{k}={v}" for k, v in s.where.items()) or "all frames"
        classes = f", classes {', '.join(s.classes)}" if s.classes else ""
        out.append(gate_check(s.name, f"Safety gate ({where}{classes}): {policy.confidence:.0%} {policy.bound} lower bound of "
                                      f"{g.metric} >= {g.min_lower_bound}, at least {g.min_samples} samples, at most "
                                      f"{g.max_regression} regression against production."))
    return out


gate_checks = _gate_checks()


@dg.asset_check(asset=evaluation, name=CHECK_INCIDENTS, blocking=True, partitions_def=cohort_partitions)
def incident_replay_no_regression(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """No incident of the library that the production model handles is missed by the candidate."""
    digest, evidence = _evidence(avops_home, context.partition_key)
    reg = evidence["incident_regressions"]
    n = len(evidence["incidents"])
    return dg.AssetCheckResult(
        passed=not reg,
        description=f"{n} incident(s) replayed; " + (f"regressions: {', '.join(reg)}" if reg else "no regression against production"),
        metadata={"regressions": dg.MetadataValue.json(reg), "incidents": dg.MetadataValue.json(evidence["incidents"]),
                  "production": dg.MetadataValue.json(evidence["production"]), "evidence_sha256": digest},
    )
