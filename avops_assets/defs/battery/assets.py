"""Battery intelligence: BMS reference tests per fleet, electrochemical features, SoH/RUL models per chemistry.

Two kinds of partition meet here: battery fleets (vehicle cohorts and stationary storage fleets,
dynamic) and cell chemistries (static, from config/battery.yaml). The embedding and the models
are per chemistry and read every fleet of it; the feature tables and drift are per fleet.
"""

import dagster as dg

from avops import datasets
from avops.battery import golden, pipeline
from avops.battery.config import load_battery_config
from avops.battery.ingest import ASSET_KEY as _REFERENCE_TESTS, ingest_fleet, load_reference_tests
from avops.battery.report import fade_markdown, gates_markdown, generalization_markdown
from avops_assets.partitions import battery_fleet_partitions, chemistry_partitions
from resources import AvopsHome, ModelRegistryResource

REFERENCE_TESTS = dg.AssetKey(_REFERENCE_TESTS.split("/"))
EMBEDDING = dg.AssetKey(pipeline.EMBEDDING_KEY.split("/"))
CELLS = dg.AssetKey(pipeline.FEATURES_KEY.split("/"))
GOLDEN = dg.AssetKey(["features", "battery_golden_vectors"])
SOH_MODELS = dg.AssetKey(["battery", "soh_models"])

chemistries = chemistry_partitions()
ALL = dg.AllPartitionMapping()
GROUP = "battery"  # the stage of battery/*; features/battery_* are in the features group (group = stage)
FEATURE_ASSETS = [EMBEDDING, CELLS, GOLDEN]
EAGER = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
# fitted once per chemistry, then a deliberate refit (a new feature version): never on every new test
ONCE = dg.AutomationCondition.on_missing() & dg.AutomationCondition.all_deps_blocking_checks_passed()


@dg.asset(key=REFERENCE_TESTS, group_name=GROUP, partitions_def=battery_fleet_partitions, code_version="1", kinds={"parquet"},
          tags={"stage": "ingest"})
def reference_tests(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """The fleet's BMS reference-test logs (`bms/<fleet>/<unit>/*.parquet`), validated and published as
    one table set (`tests`, `samples`). A bad log is quarantined with its reason; the others go on."""
    r = ingest_fleet(avops_home.layout(), load_battery_config(), context.partition_key, avops_home.object_store())
    for q in r.quarantined:
        context.log.warning(f"quarantined {q.original}: {q.reason}: {q.detail}")
    return dg.MaterializeResult(
        metadata={"tests": r.tests, "quarantined": len(r.quarantined), "chemistry": r.manifest.body["chemistry"],
                  "input_sha256": dg.MetadataValue.json({i["file"]: i["sha256"] for i in r.inputs}),
                  "quarantine": dg.MetadataValue.json([q.__dict__ for q in r.quarantined]), "manifest_sha256": r.manifest.digest},
        data_version=dg.DataVersion(r.manifest.digest))


@dg.asset(key=EMBEDDING, deps=[dg.AssetDep(REFERENCE_TESTS, partition_mapping=ALL)], group_name="features", partitions_def=chemistries,
          code_version=pipeline.BATTERY_VERSION, automation_condition=ONCE, kinds={"numpy"}, tags={"stage": "features"})
def battery_embedding(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """The degradation embedding of one chemistry: PCA of incremental capacity curves over every fleet of
    that chemistry, stored by digest. The feature definition's version includes it: a refit is a new
    feature version, and the fleets' tables must be rebuilt with it (the models refuse mixed versions)."""
    m = pipeline.fit_chemistry_embedding(avops_home.layout(), load_battery_config(), context.partition_key)
    return dg.MaterializeResult(
        metadata={"embedding_sha256": m.body["embedding_sha256"], "curves": m.body["curves"],
                  "fitted_on": dg.MetadataValue.json(m.body["fitted_on"]), "manifest_sha256": m.digest},
        data_version=dg.DataVersion(m.digest))


@dg.asset(key=CELLS, deps=[REFERENCE_TESTS, dg.AssetDep(EMBEDDING, partition_mapping=ALL)], group_name="features",
          partitions_def=battery_fleet_partitions, code_version=pipeline.BATTERY_VERSION, automation_condition=EAGER, kinds={"parquet"},
          tags={"stage": "features"})
def battery_cells(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """One row per reference test (entity: cell, event time: the test's start), every feature computed
    offline and point in time (a test's trend and begin-of-life reference use only that cell's tests up
    to it), with the labels measured by the test's full discharge (SoH, and RUL where the cell reached
    end of life). The same definition computes the features online, on the BMS (parity: blocking check)."""
    home = avops_home.layout()
    m = pipeline.build_feature_table(home, load_battery_config(), context.partition_key)
    _, features, labels = pipeline.load_feature_table(home, context.partition_key, avops_home.object_store())
    return dg.MaterializeResult(
        metadata={"feature_version": m.body["feature_version"], "chemistry": m.body["chemistry"], "rows": len(features),
                  "cells": int(features["cell_id"].nunique()), "raw_manifest": m.body["raw_manifest"],
                  "embedding_manifest": m.body["embedding_manifest"], "manifest_sha256": m.digest,
                  "fade": dg.MetadataValue.md(fade_markdown(features, labels)),
                  "input_sha256": dg.MetadataValue.json({"reference_tests": m.body["raw_manifest"], "embedding": m.body["embedding_manifest"]})},
        data_version=dg.DataVersion(m.digest))


@dg.asset(key=GOLDEN, deps=[dg.AssetDep(CELLS, partition_mapping=ALL)], group_name="features", partitions_def=chemistries,
          code_version=pipeline.BATTERY_VERSION, automation_condition=EAGER, kinds={"json"}, tags={"stage": "features"})
def battery_golden_vectors(context: dg.AssetExecutionContext, avops_home: AvopsHome) -> dg.MaterializeResult:
    """Golden vectors for a BMS implementation of the online features: inputs (the test's samples and the
    state the BMS keeps), expected features and float32 tolerances, for every constant of the definition.
    An embedded team runs its C implementation over this file (see README, "Battery features on the BMS")."""
    home, store = avops_home.layout(), avops_home.object_store()
    config = load_battery_config()
    chem = context.partition_key
    _, spec = pipeline.feature_spec(home, config, chem, store)
    docs, sources = [], {}
    for fleet in config.fleets_of(chem):
        try:
            raw, tests, samples = load_reference_tests(home, fleet, store)
        except LookupError:
            continue
        docs.append(golden.golden_vectors(tests, samples, spec))
        sources[fleet] = raw.digest
    if not docs:
        raise dg.Failure(f"no fleet of chemistry {chem} has reference tests yet")
    doc = golden.merge(docs)
    doc["sources"] = sources
    data = golden.write_golden_vectors(doc)
    digest = store.put_bytes(data)
    ref = store.location(digest)
    m = datasets.publish(store, home.refs, "features/battery_golden_vectors", chem, {},
                         {"golden_sha256": digest, "feature_version": spec.version, "vectors": len(doc["vectors"]), "sources": sources})
    return dg.MaterializeResult(
        metadata={"golden_sha256": digest, "file": dg.MetadataValue.path(ref), "vectors": len(doc["vectors"]),
                  "feature_version": spec.version, "bytes": len(data), "manifest_sha256": m.digest},
        data_version=dg.DataVersion(digest))


@dg.asset(key=SOH_MODELS, deps=[dg.AssetDep(CELLS, partition_mapping=ALL)], group_name=GROUP, partitions_def=chemistries,
          code_version=pipeline.BATTERY_VERSION, automation_condition=ONCE, kinds={"numpy"}, tags={"stage": "training"})
def soh_models(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """State of health and remaining useful life (cycles to end of life) for one chemistry, trained on
    vehicle and stationary cells together, judged on held-out cells (leave-one-cell-out) per
    temperature band; released as the chemistry's `production` battery model when its gates pass.
    The evaluation also shows the generalisation claim: vehicle cells only vs both fleets."""
    r = pipeline.train_chemistry(avops_home.layout(), model_registry.open(), load_battery_config(), context.partition_key,
                                 f"dagster:{context.job_name}", context.run_id)
    return dg.MaterializeResult(
        metadata={"model": pipeline.MODEL, "version": r.version.version, "stage": r.version.stage,
                  "checkpoint_sha256": r.checkpoint_sha256, "evidence_sha256": r.evidence_sha256,
                  "input_sha256": dg.MetadataValue.json(r.version.lineage), "cells": r.cells, "tests": r.tests,
                  "censored_cells": r.censored_cells, "gates": dg.MetadataValue.md(gates_markdown(r.gates)),
                  "generalization": dg.MetadataValue.md(generalization_markdown(r.generalization)),
                  "generalization_table": dg.MetadataValue.json(r.generalization.to_dict(orient="records")),
                  "trigger": context.run.tags.get("avops/trigger", "manual")},
        data_version=dg.DataVersion(r.checkpoint_sha256))


DRIFT = dg.AssetKey(["battery", "drift"])


@dg.asset(key=DRIFT, deps=[CELLS, dg.AssetDep(SOH_MODELS, partition_mapping=ALL)], group_name=GROUP,
          partitions_def=battery_fleet_partitions, code_version="1", automation_condition=EAGER, kinds={"numpy"},
          tags={"stage": "monitoring"})
def battery_drift(context: dg.AssetExecutionContext, avops_home: AvopsHome, model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """Is the fleet's battery aging still the aging its chemistry's production model was trained on?

    Cells age by design, so each feature of the tests that arrived since training is judged against
    the expected trajectory at the test's own age (not against day one); the naive day-one comparison
    is shown beside it. The decision is the one `battery_drift_sensor` takes (a drifted fleet
    requests one retrain of its chemistry)."""
    home = avops_home.layout()
    out = pipeline.fleet_drift(home, model_registry.open(), load_battery_config(), context.partition_key)
    if out is None:
        return dg.MaterializeResult(metadata={"verdict": "no production model for this fleet's chemistry yet"})
    version, result = out
    from avops.battery.drift import drift_markdown

    digest = avops_home.object_store().put_json(result.to_dict())
    return dg.MaterializeResult(
        metadata={"verdict": result.verdict, "drifted_features": dg.MetadataValue.json(result.drifted_features),
                  "naive_would_flag": dg.MetadataValue.json(result.naive_drifted), "reasons": "; ".join(result.reasons)[:2000],
                  "production_version": version.version, "reference_sha256": result.reference_digest, "verdict_sha256": digest,
                  "new_tests": result.rows, "cells": result.cells, "drift": dg.MetadataValue.md(drift_markdown(result))})
