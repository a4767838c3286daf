"""Blocking checks on compiled engines: parity with the FP32 checkpoint per safety slice, and the SoC's budgets.

Each blocks when no engine of the target passes; the engines that fail are excluded from the
compatibility matrix (so never packaged) and named in the check's metadata.
"""

import dagster as dg

from avops import datasets
from avops.compile import pipeline as compile_pipeline
from avops_assets.defs.compile.assets import bms_engines, dms_engines, engines, maintenance_engines, sil_engines
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome


def _records(avops_home: AvopsHome, key: str, cohort: str) -> tuple[list[dict], str | None]:
    """The engine records, and why none were built when that was on purpose (no production model)."""
    m = datasets.current(avops_home.object_store(), avops_home.layout().refs, key, cohort)
    if m is None:
        raise dg.Failure(f"no {key} for {cohort}: materialize it first")
    return m.body["engines"], m.body.get("skipped")


def _checks(asset, key: str, prefix: str) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset=asset, name=f"{prefix}parity", blocking=True, partitions_def=cohort_partitions)
    def parity(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
        """At least one engine keeps every safety slice within `engine_max_drop` of the FP32 checkpoint.

        An engine that loses too much (typically INT8) is excluded by the compatibility matrix and
        named here; the check blocks only when no engine of the target is left to ship.
        """
        recs, skipped = _records(avops_home, key, context.partition_key)
        if skipped:
            return dg.AssetCheckResult(passed=True, description=f"nothing built, nothing shipped: {skipped}")
        verdict = compile_pipeline.shippable(recs, "parity")
        return dg.AssetCheckResult(passed=verdict.passed, description=verdict.description,
                                   metadata={"excluded": dg.MetadataValue.json(verdict.excluded),
                                             "shippable": dg.MetadataValue.json(verdict.kept),
                                             "parity": dg.MetadataValue.json({r["precision"]: r["parity"] for r in recs})})

    @dg.asset_check(asset=asset, name=f"{prefix}budget", blocking=True, partitions_def=cohort_partitions)
    def budget(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
        """At least one engine within its SoC's latency and memory budget (host measurements are scaled and say so)."""
        recs, skipped = _records(avops_home, key, context.partition_key)
        if skipped:
            return dg.AssetCheckResult(passed=True, description=f"nothing built, nothing shipped: {skipped}")
        verdict = compile_pipeline.shippable(recs, "budget")
        return dg.AssetCheckResult(passed=verdict.passed, description=verdict.description,
                                   metadata={"excluded": dg.MetadataValue.json(verdict.excluded),
                                             "budget": dg.MetadataValue.json({r["precision"]: r["budget"] for r in recs})})

    return [parity, budget]


engine_checks = _checks(engines, compile_pipeline.ENGINES, "engine_")
sil_engine_checks = _checks(sil_engines, compile_pipeline.SIL_ENGINES, "sil_engine_")
maintenance_engine_checks = _checks(maintenance_engines, compile_pipeline.MAINTENANCE_ENGINES, "maintenance_engine_")
bms_engine_checks = _checks(bms_engines, compile_pipeline.BMS_ENGINES, "bms_engine_")
dms_engine_checks = _checks(dms_engines, compile_pipeline.DMS_ENGINES, "dms_engine_")
