"""``avops lineage``: the verified lineage of a package, cross-checked against the Dagster instance's records.

The graph and every digest in it come from :mod:`avops.lineage` (recomputed from stored bytes).
This command adds what the Dagster UI shows: for each node, the materialization of its asset and
partition that recorded the same digest (run id, time). A node no materialization vouches for is a
disagreement between the UI's lineage and ours, and is reported as such.
"""

import json
import sys
from pathlib import Path

import click

from avops.cli import console

# node kind -> (asset key, metadata entry holding the node's digest); a model's checkpoint and gate result
# are recorded by the asset that trains that model, in the partition the registry scopes it to
DAGSTER_SIDE = {
    "package": ("ota/packages", "manifest_sha256"),
    "checkpoint": ("training/checkpoints", "checkpoint_sha256"),
    "gate result": ("training/evaluation", "evidence_sha256"),
    "dataset commit": ("curation/released_sets", "dataset_version"),
    "auto-labels": ("curation/auto_labels", "manifest_sha256"),
    "raw drives": ("ingest/raw_drives", "manifest_sha256"),
    "studio model": ("occupant/studio_model", "weights_sha256"),
}
ROUND_SIDE = ("federated/rounds", "manifest_sha256")  # per (cohort|round) partition: each round is a materialization of its own
MODEL_ASSETS = {  # component -> the asset whose materializations record its checkpoint and its gate evidence
    "maintenance": "maintenance/models",
    "battery_soh": "battery/soh_models",
    "occupant_monitoring": "occupant/dms_model",
}


def _model_of(lin) -> dict[str, tuple[str, str]]:
    """Checkpoint and gate-result node -> (component, registry scope), for components trained outside training/."""
    out: dict[str, tuple[str, str]] = {}
    for node in lin.nodes.values():
        if node.kind == "checkpoint":
            component = node.label.split(" ", 1)[0]
            if component in MODEL_ASSETS:
                out[node.id] = (component, str(node.detail.get("cohort", "")))
    for parent, child, _ in lin.edges:
        if parent in out and lin.nodes[child].kind == "gate result":
            out[child] = out[parent]
    return out


def dagster_records(instance, cohort: str, limit: int = 200, extra: set[tuple[str, str]] | None = None,
                    rounds: set[str] | None = None) -> dict[str, dict[str, dict]]:
    """Per asset of :data:`DAGSTER_SIDE` (and per (asset, partition) in ``extra``, per federated round partition in
    ``rounds``): digest -> the materialization (run, time) that recorded it."""
    import dagster as dg

    out: dict[str, dict[str, dict]] = {}
    wanted = {(asset, entry, cohort) for asset, entry in set(DAGSTER_SIDE.values())}
    wanted |= {(asset, entry, partition) for asset, partition in (extra or set()) for entry in ("checkpoint_sha256", "evidence_sha256")}
    wanted |= {(*ROUND_SIDE, partition) for partition in (rounds or set())}
    for asset, entry, partition in wanted:
        records = instance.fetch_materializations(dg.AssetRecordsFilter(dg.AssetKey(asset.split("/")), asset_partitions=[partition]),
                                                  limit=limit).records
        seen = out.setdefault(asset if partition == cohort else f"{asset}[{partition}]", {})
        for r in records:
            mat = r.asset_materialization
            value = mat.metadata.get(entry) if mat else None
            digest = getattr(value, "value", value)
            if isinstance(digest, str) and digest not in seen:
                seen[digest] = {"run_id": r.run_id, "timestamp": r.timestamp, "asset": asset, "partition": partition}
    return out


def model_partitions(lin, cohort: str) -> set[tuple[str, str]]:
    """(asset, partition) of the non-perception models in the lineage (a battery model is partitioned by chemistry)."""
    return {(MODEL_ASSETS[c], scope or cohort) for c, scope in _model_of(lin).values()}


def round_partitions(lin) -> set[str]:
    """The ``cohort|round`` partitions of the federated rounds in the lineage."""
    return {n.detail["partition"] for n in lin.nodes.values() if n.kind == "federated round" and "partition" in n.detail}


def cross_check(lin, records: dict[str, dict[str, dict]], cohort: str = "") -> None:
    """Annotate each node with the Dagster materialization that recorded its digest; flag the ones none did."""
    models = _model_of(lin)
    for node in lin.nodes.values():
        side = ROUND_SIDE if node.kind == "federated round" else DAGSTER_SIDE.get(node.kind)
        if side is None or node.digest is None:
            continue
        asset, entry = side
        key = asset
        if node.kind == "federated round":
            key = f"{asset}[{node.detail.get('partition')}]"
        elif node.id in models:
            component, scope = models[node.id]
            asset = MODEL_ASSETS[component]
            key = asset if (scope or cohort) == cohort else f"{asset}[{scope}]"
        rec = records.get(key, {}).get(node.digest)
        if rec is None:
            node.problems.append(f"no Dagster materialization of {asset} for this partition records {entry}={node.digest[:12]}: "
                                 "the UI's lineage and this one disagree")
            node.verified = False
        else:
            node.detail["dagster"] = rec


@click.command("lineage")
@click.option("--asset", default="ota/packages", show_default=True, help="Where the lineage starts (ota/packages).")
@click.option("--partition", "cohort", required=True, help="The cohort (partition key).")
@click.option("--format", "fmt", type=click.Choice(["json", "dot"]), default="json", show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here instead of stdout.")
@click.option("--no-dagster", is_flag=True, help="Skip the cross-check against the Dagster instance (e.g. on an auditor's copy).")
def lineage_command(asset: str, cohort: str, fmt: str, out: Path | None, no_dagster: bool) -> None:
    """Package -> engines -> checkpoint -> dataset commit -> curated set -> raw drives -> landed file sha256s, verified."""
    from avops.lineage import package_lineage
    from avops_assets.definitions import resources

    if asset != "ota/packages":
        raise click.ClickException(f"lineage starts from ota/packages (the thing on the vehicle), not {asset}")
    res = resources()  # the deployment's registry (SQLite or Postgres) and dataset store (embedded or lakeFS)
    lay, registry, repo = res["avops_home"].layout(), res["model_registry"].open(), res["dataset_versioning"].open()
    try:
        lin = package_lineage(lay, cohort, registry, repo)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    if not no_dagster:
        import dagster as dg

        from avops_assets.instance import ensure_dagster_home

        ensure_dagster_home()
        with dg.DagsterInstance.get() as instance:
            cross_check(lin, dagster_records(instance, cohort, extra=model_partitions(lin, cohort), rounds=round_partitions(lin)), cohort)
    text = json.dumps(lin.to_dict(), indent=2, default=str) if fmt == "json" else lin.to_dot()
    if out:
        out.write_text(text)
    else:
        click.echo(text)
    verified = sum(n.verified is True for n in lin.nodes.values())
    unverifiable = sum(n.verified is None for n in lin.nodes.values())
    if lin.problems:
        for p in lin.problems:
            console.print(f"[red]✗[/] {p}")
        console.print(f"[red]lineage of {cohort}'s package does not verify[/]: {len(lin.problems)} problem(s) in {len(lin.nodes)} nodes")
        sys.exit(1)
    console.print(f"[green]lineage verified[/]: {verified} of {len(lin.nodes)} nodes recomputed from stored bytes"
                  + (f", {unverifiable} recorded only (nothing to recompute)" if unverifiable else "")
                  + ("" if no_dagster else "; every node matches a Dagster materialization"))
