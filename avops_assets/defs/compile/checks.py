"""Blocking checks on compiled engines: parity with the FP32 checkpoint per safety slice, and the SoC's budgets."""

import dagster as dg

from avops import datasets
from avops.compile import pipeline as compile_pipeline
from avops_assets.defs.compile.assets import engines, sil_engines
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome


def _records(avops_home: AvopsHome, key: str, cohort: str) -> list[dict]:
    m = datasets.current(avops_home.object_store(), avops_home.layout().refs, key, cohort)
    if m is None:
        raise dg.Failure(f"no {key} for {cohort}: materialize it first")
    return m.body["engines"]


def _checks(asset, key: str, prefix: str) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset=asset, name=f"{prefix}parity", blocking=True, partitions_def=cohort_partitions)
    def parity(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
        """Every engine keeps each safety slice's metric within `engine_max_drop` (config/safety_gates.yaml) of the FP32 checkpoint."""
        recs = _records(avops_home, key, context.partition_key)
        bad = {}
        for r in recs:
            failing = {k: v for k, v in r["parity"].get("slices", {}).items() if not v["passed"]}
            if not r["parity"]["passed"]:
                bad[f"{r['precision']}:{r['engine_sha256'][:12]}"] = failing or r["parity"].get("reason")
        return dg.AssetCheckResult(passed=not bad, description="all engines within the allowed drop on every slice" if not bad else
                                   f"{len(bad)} engine(s) lose too much: {', '.join(bad)}",
                                   metadata={"failing": dg.MetadataValue.json(bad),
                                             "parity": dg.MetadataValue.json({r["precision"]: r["parity"] for r in recs})})

    @dg.asset_check(asset=asset, name=f"{prefix}budget", blocking=True, partitions_def=cohort_partitions)
    def budget(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
        """Latency and peak memory of every engine within its SoC's budget (host measurements are scaled and say so)."""
        recs = _records(avops_home, key, context.partition_key)
        bad = [f"{r['precision']}: {r['budget']}" for r in recs if not r["budget"]["passed"]]
        return dg.AssetCheckResult(passed=not bad, description="within budget" if not bad else "; ".join(bad)[:500],
                                   metadata={"budget": dg.MetadataValue.json({r["precision"]: r["budget"] for r in recs})})

    return [parity, budget]


engine_checks = _checks(engines, compile_pipeline.ENGINES, "engine_")
sil_engine_checks = _checks(sil_engines, compile_pipeline.SIL_ENGINES, "sil_engine_")
