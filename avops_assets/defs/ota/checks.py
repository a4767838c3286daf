"""Blocking check on packages: what the repositories now serve is exactly what was attested."""

import json

import dagster as dg

from avops import datasets
from avops.ota.keys import KeyRing
from avops.ota.packages import ATTESTATION_ROLE, PACKAGES_KEY, verify
from avops_assets.defs.ota.assets import packages
from avops_assets.partitions import cohort_partitions
from resources import AvopsHome


@dg.asset_check(asset=packages, name="attestations_match_targets", blocking=True, partitions_def=cohort_partitions)
def attestations_match_targets(context: dg.AssetCheckExecutionContext, avops_home: AvopsHome) -> dg.AssetCheckResult:
    """Each released target's bytes in the image repository hash to its attestation's subject, and the DSSE signature verifies."""
    home = avops_home.layout()
    store = avops_home.object_store()
    m = datasets.current(store, home.refs, PACKAGES_KEY, context.partition_key)
    if m is None:
        raise dg.Failure("no package yet")
    keys = KeyRing(home.root / "ota" / "keys").public_keys(ATTESTATION_ROLE)
    problems = {}
    for r in datasets.read_table(store, m, "releases").to_pylist():
        folder, name = r["path"].rsplit("/", 1)
        data = (home.root / "ota" / "image" / "targets" / folder / f"{r['sha256']}.{name}").read_bytes()
        envelope = json.loads(store.get_bytes(r["attestation_sha256"], verify=True))
        found = verify(envelope, keys, data, r["path"])
        if found:
            problems[r["path"]] = found
    return dg.AssetCheckResult(passed=not problems, description="every target matches its attestation" if not problems else
                               f"{len(problems)} target(s) do not match their attestation", metadata={"problems": dg.MetadataValue.json(problems)})
