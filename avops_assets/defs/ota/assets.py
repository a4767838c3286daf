"""OTA: signed packages per cohort, published through the Uptane image and director repositories."""

import dagster as dg

from avops import datasets
from avops.audit import log as audit
from avops.compile import pipeline as compiling
from avops.ota.packages import PackageRefused, build_and_publish, publish_manifest
from avops_assets.defs.compile.assets import COMPATIBILITY
from avops_assets.defs.curation.assets import PROPAGATE
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, FleetRegistryResource, ModelRegistryResource

PACKAGES = dg.AssetKey(["ota", "packages"])


@dg.asset(key=PACKAGES, deps=[COMPATIBILITY], kinds={"json"}, group_name="ota", partitions_def=cohort_partitions,
          code_version="1", automation_condition=PROPAGATE)
def packages(context: dg.AssetExecutionContext, avops_home: AvopsHome, fleet: FleetRegistryResource,
             model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The cohort's OTA package: the engines its compatibility matrix allows, signed into the image repository
    with an in-toto/SLSA provenance attestation (DSSE) and a CycloneDX SBOM, and directed to its ECUs.

    Refused, with the reason, when the matrix allows nothing or an attestation does not name the
    exact bytes being shipped.
    """
    home = avops_home.layout()
    registry = fleet.load()
    cohort = registry.cohort(context.partition_key)
    store = avops_home.object_store()
    m = datasets.current(store, home.refs, compiling.COMPATIBILITY, cohort.id)
    if m is None:
        raise dg.Failure(f"no compatibility matrix for {cohort.id}: materialize compile/compatibility first")
    matrix = datasets.read_table(store, m, "matrix").to_pandas()
    try:
        pkg = build_and_publish(home, cohort, matrix, compiling.all_engines(home, registry.cohort_ids), context.run_id)
    except PackageRefused as exc:
        raise dg.Failure(f"package refused: {exc}") from exc
    pm, rows = publish_manifest(home, pkg, m.digest)
    event = audit.record(model_registry.open(), audit.PACKAGE_SIGNED, f"{cohort.id}/{pkg.rollout_id}",
                         {"cohort": cohort.id, "rollout_id": pkg.rollout_id, "manifest_sha256": pm.digest, "releases": rows,
                          "matrix_manifest_sha256": m.digest}, f"dagster:{context.asset_key.to_user_string()}", context.run_id)
    table = ["| target | sha256 | release | attestation | SBOM |", "|---|---|---:|---|---|"] + [
        f"| {r['path']} | `{r['sha256'][:12]}` | {r['release_counter']} | `{r['attestation_sha256'][:12]}` | `{r['sbom_sha256'][:12]}` |"
        for r in rows]
    return dg.MaterializeResult(metadata={"rollout_id": pkg.rollout_id, "releases": dg.MetadataValue.md("\n".join(table) + "\n"),
                                          "manifest_sha256": pm.digest, "input_manifest_sha256": m.digest,
                                          "audit_event": event},
                                data_version=dg.DataVersion(pm.digest))
