"""Compliance: the dossier of each cohort's package, generated from one run, signed and logged."""

import dagster as dg

from avops.compliance import dossier as dossiers
from avops_assets.defs.curation.assets import PROPAGATE
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, DatasetVersioning, FleetRegistryResource, ModelRegistryResource

DOSSIERS = dg.AssetKey(["compliance", "dossiers"])
PACKAGES = dg.AssetKey(["ota", "packages"])


@dg.asset(key=DOSSIERS, deps=[PACKAGES], kinds={"json", "html"}, group_name="compliance", partitions_def=cohort_partitions,
          code_version="1", automation_condition=PROPAGATE)
def dossiers_asset(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource,
                   model_registry: ModelRegistryResource, dataset_versioning: DatasetVersioning) -> dg.MaterializeResult:
    """The compliance dossier of the cohort's current package: ISO 26262, SOTIF, ISO/PAS 8800, EU AI Act Annex IV,
    UNECE R155/R156 and the GB/T and NHTSA mapping, as JSON and a self-contained HTML report.

    Built from the verified lineage (every digest recomputed), the gate evidence in the audit log,
    the registry, the release log and shadow mode; signed (DSSE); its digest appended to the audit
    log. Fields only a person can supply are OPEN placeholders. `avops dossier verify` checks the
    folder offline. Without a package, the dossier documents the latest evaluated model and says
    why nothing was packaged (its software-update sections are missing, not filled).
    """
    home = avops_home.layout()
    cohort = fleet.load().cohort(context.partition_key)
    registry = model_registry.open()
    try:
        doc, lin = dossiers.build(home, cohort, registry, dataset_versioning.open(), context.run_id)
    except LookupError as exc:
        raise dg.Failure(f"no dossier for {cohort.id}: {exc}") from exc
    folder = dossiers.write(home, doc, registry)
    open_items = len(doc["open_items"])
    return dg.MaterializeResult(metadata={
        "html": dg.MetadataValue.path(str(folder / "dossier.html")),
        "folder": dg.MetadataValue.path(str(folder)),
        "gates_verdict": doc["gates_verdict"],
        "lineage_verified": not lin.problems,
        "lineage_problems": dg.MetadataValue.json(lin.problems),
        "open_items": open_items,
        "mapping": dg.MetadataValue.md("| regime | clause | status |\n|---|---|---|\n" + "".join(
            f"| {r['regime']} | {r['clause']} | {r['status'][:40]} |\n" for r in doc["mapping"])),
        "package_manifest_sha256": doc["subject"]["package_manifest_sha256"],
        "no_package": doc["no_package"] or "",
    })
