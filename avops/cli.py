"""The ``avops`` command line: fleet simulation, CAN decoding, and (via plugins) the demo.

Commands that need Dagster are registered as ``avops.commands`` entry points by the
``avops_assets`` package and loaded only when called, so ``avops can decode`` works
(and starts fast) on a machine with no Dagster at all.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)


class PluginGroup(click.Group):
    """A click group that also lists ``avops.commands`` entry points, importing them lazily."""

    def _plugins(self):
        return {ep.name: ep for ep in entry_points(group="avops.commands")}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self._plugins():
            cmd = self._plugins()[name].load()
        return cmd


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"), console=console,
    )


@click.group(cls=PluginGroup)
def main() -> None:
    """avops: MLOps for automotive AI, from fleet drive logs to signed OTA packages."""


@main.group()
def fleet() -> None:
    """The simulated fleet."""


@fleet.command("simulate")
@click.option("--profile", default="demo", show_default=True, help="Simulation profile from the fleet registry (demo or full).")
@click.option("--seed", type=int, default=None, help="Override the registry's seed.")
@click.option("--cohort", "cohorts", multiple=True, help="Only these cohorts (repeatable). Default: all.")
@click.option("--start-date", default=None, help="First drive date (YYYY-MM-DD); later dates show seasonal drift.")
@click.option("--registry", type=click.Path(exists=True, dir_okay=False), default=None, help="Fleet registry YAML.")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to write into.")
@click.option("--campaign", "campaign_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A collection campaign (campaigns/<cohort>/<id>.json): drive more in its ODD conditions.")
def fleet_simulate(profile, seed, cohorts, start_date, registry, home, campaign_file) -> None:
    """Write simulated drive logs (MCAP, BLF, ASC, MF4) into the landing zone."""
    from avops.curation.campaigns import Campaign
    from avops.fleet.simulator import Profile, simulate_fleet
    from avops.home import layout
    from avops.fleet_registry import RegistryError, load_registry

    try:
        reg = load_registry(registry)
        prof = Profile.from_registry(reg, profile)
    except (RegistryError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        campaign = Campaign.load(campaign_file) if campaign_file else None
    except ValueError as exc:
        raise click.ClickException(f"{campaign_file}: {exc}") from exc
    selected = [campaign.cohort] if campaign else (list(cohorts) or reg.cohort_ids)
    per_vehicle = campaign.drives_per_vehicle if campaign else prof.drives_per_vehicle
    total = sum(reg.cohort(c).vehicle_count for c in selected) * per_vehicle
    lay = layout(home)
    with progress_bar() as bar:
        task = bar.add_task("simulating drives", total=total, note="")
        report = simulate_fleet(
            reg, lay, profile=profile, seed=seed, cohorts=selected, start_date=start_date, campaign=campaign,
            progress=lambda r: bar.update(task, advance=1, note=f"{r.drive_id}.{r.format}{' (exists)' if r.skipped else ''}"),
        )
    console.print(f"[green]{report.written} drive(s) written, {report.skipped} already present[/] in {lay.landing}")


@fleet.command("simulate-batteries")
@click.option("--profile", default="demo", show_default=True, help="Battery simulation profile of config/battery.yaml (demo or full).")
@click.option("--fleet", "fleets", multiple=True, help="Only these battery fleets (repeatable). Default: all.")
@click.option("--until", default=None, help="Deliver only reference tests that started by this date (YYYY-MM-DD).")
@click.option("--workers", type=int, default=2, show_default=True, help="Cells simulated in parallel (PyBaMM, one process each).")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to write into.")
def fleet_simulate_batteries(profile, fleets, until, workers, home) -> None:
    """Age every cell of the battery fleets with PyBaMM and deliver their BMS reference-test logs (bms/)."""
    from datetime import datetime, timezone

    from avops.battery.config import BatteryConfigError, load_battery_config
    from avops.fleet_registry import load_registry
    from avops.home import layout

    try:
        config = load_battery_config()
        config.profile(profile)
        for f in fleets:
            config.fleet(f)
    except BatteryConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    stop = datetime.fromisoformat(until).replace(tzinfo=timezone.utc) if until else None
    lay = layout(home)
    results = run_battery_simulation(config, load_registry(), lay, profile, list(fleets) or None, workers, stop)
    cached = sum(r.cached for r in results)
    console.print(f"[green]{sum(r.written for r in results)} BMS log(s) written[/] for {len(results)} cells "
                  f"({cached} from the PyBaMM cache) in {lay.bms}")


@fleet.command("simulate-cabin")
@click.option("--cohort", "cohorts", multiple=True, help="Cohorts (repeatable). Default: federated.cohorts of config/occupant.yaml.")
@click.option("--exclude", "excludes", multiple=True, help="Leave an attribute value out of the fleet's frames, e.g. eyewear=sunglasses.")
@click.option("--plant-fault", "faults", multiple=True, help="VEHICLE=drop|slow|leak_frame: that vehicle's software carries the fault.")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to write into.")
def fleet_simulate_cabin(cohorts, excludes, faults, home) -> None:
    """Write each vehicle's in-cabin frames into its own store (vehicles/) and the consented sessions (cabin_consented/)."""
    from avops.home import layout
    from avops.occupant.config import OccupantConfigError, load_occupant_config
    from avops.occupant.federated import FAULTS
    from avops.occupant.pipeline import FAULT_FILE

    try:
        config = load_occupant_config()
    except OccupantConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    exclude: dict[str, set[str]] = {}
    for e in excludes:
        attr, _, value = e.partition("=")
        if attr not in config.slices or value not in config.slices[attr]:
            raise click.ClickException(f"--exclude {e!r}: expected ATTRIBUTE=VALUE from config/occupant.yaml slices ({', '.join(config.slices)})")
        exclude.setdefault(attr, set()).add(value)
    planted = [(f, *f.partition("=")[::2]) for f in faults]
    for f, _, kind in planted:
        if kind not in FAULTS:
            raise click.ClickException(f"--plant-fault {f!r}: expected VEHICLE=FAULT, the fault one of {', '.join(FAULTS)}")
    lay = layout(home)
    written = run_cabin_simulation(config, lay, list(cohorts) or list(config.federated.cohorts), exclude)
    for f, vehicle, kind in planted:
        matches = list(lay.vehicles.glob(f"*/{vehicle}/cabin"))
        if not matches:
            raise click.ClickException(f"--plant-fault {f!r}: no simulated vehicle {vehicle!r} under {lay.vehicles}")
        (matches[0].parent / FAULT_FILE).write_text(kind)
        console.print(f"[yellow]planted fault[/] {kind} in {vehicle}")
    console.print(f"[green]{written} vehicle cabin store(s)[/] in {lay.vehicles}; consented sessions in {lay.cabin_consented}")


def run_cabin_simulation(config, lay, cohorts: list[str], exclude: dict | None = None) -> int:
    """The cabin simulation with a progress bar: per vehicle, then the consented sessions."""
    from avops.occupant.cabin import simulate_cohort

    s = config.simulator
    with progress_bar() as bar:
        task = bar.add_task("rendering cabin frames", total=len(cohorts) * (s.vehicles_per_cohort + s.eval_vehicles), note="")
        for c in cohorts:
            simulate_cohort(lay.vehicles, lay.cabin_consented, config, c, exclude, progress=lambda v: bar.update(task, advance=1, note=v))
    return len(cohorts) * s.vehicles_per_cohort


def run_battery_simulation(config, registry, lay, profile: str, fleets, workers: int = 2, until=None):
    """The battery simulation with a progress bar (PyBaMM takes seconds per cell the first time)."""
    from avops.fleet.battery import fleet_units, simulate_batteries

    prof = config.profile(profile)
    total = sum(len(fleet_units(config, registry, f, prof.stationary_units)) * prof.cells_per_unit for f in (fleets or config.fleets))
    with progress_bar() as bar:
        task = bar.add_task("aging cells (PyBaMM)", total=total, note="")
        return simulate_batteries(config, registry, lay, profile, fleets, workers, until,
                                  progress=lambda r: bar.update(task, advance=1, note=f"{r.spec.cell_id}{' (cached)' if r.cached else ''}"))


@main.group()
def can() -> None:
    """CAN logs and DBC databases."""


@can.command("decode")
@click.option("--dbc", "dbc_spec", required=True, help="A .dbc file, or opendbc:<name> for one shipped with opendbc.")
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
def can_decode(dbc_spec: str, logs: tuple[Path, ...], out_dir: Path) -> None:
    """Decode BLF, ASC or MF4 CAN logs into one Parquet file per DBC message."""
    from avops.can.cli import decode_logs
    from avops.can.dbc import DbcError
    from avops.can.logs import CanLogError

    with progress_bar() as bar:
        task = bar.add_task("decoding", total=len(logs), note="")

        def step(*args) -> None:
            bar.update(task, advance=1, note=str(args[0]) if args else "")

        try:
            summary = decode_logs(dbc_spec, list(logs), out_dir, progress=step)
        except (DbcError, CanLogError) as exc:
            raise click.ClickException(str(exc)) from exc
    table = Table(title=f"decoded into {out_dir}")
    table.add_column("message")
    table.add_column("rows", justify="right")
    for name, rows in sorted(summary.rows_per_message.items()):
        table.add_row(name, f"{rows:,}")
    console.print(table)
    if summary.unknown_ids:
        ids = ", ".join(f"0x{k:X}: {v}" for k, v in sorted(summary.unknown_ids.items()))
        console.print(f"[yellow]{sum(summary.unknown_ids.values())} frame(s) with ids the DBC does not define[/] ({ids})")


@main.command("query")
@click.option("--asset", "key", required=True, help="Published asset, e.g. ingest/raw_drives or curation/auto_labels.")
@click.option("--cohort", required=True, help="Partition (cohort id).")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
@click.argument("sql")
def query(key: str, cohort: str, home: str | None, sql: str) -> None:
    """Run SQL (DuckDB) over an asset partition's tables, e.g. "select cls, count(*) from objects group by 1"."""
    import duckdb

    from avops.home import layout
    from avops.query import connect

    try:
        con = connect(layout(home), key, cohort)
        rel = con.sql(sql)
    except (LookupError, duckdb.Error) as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table()
    for col in rel.columns:
        table.add_column(col)
    for row in rel.limit(200).fetchall():
        table.add_row(*[str(v) for v in row])
    console.print(table)


# --- model registry ----------------------------------------------------------------------

def _print_wide(table: Table) -> None:
    """Registry tables have many columns: when piped (not a terminal) render them 160 wide instead of 80."""
    (console if console.is_terminal else Console(stderr=True, width=160)).print(table)


def _open_registry(home: str | None):
    """The registry (and its audit log): AVOPS_REGISTRY_URL when set (Postgres), else SQLite in the home."""
    import os

    from avops.home import layout
    from avops.registry import ModelRegistry

    lay = layout(home)
    url = os.environ.get("AVOPS_REGISTRY_URL")
    return ModelRegistry(url, audit_keys=lay.root / "audit" / "keys") if url else ModelRegistry.local(lay)


@main.group("registry")
def registry_group() -> None:
    """The model registry: versions, stages, aliases and their full history."""


@registry_group.command("list")
@click.option("--name", default=None, help="Only this model.")
@click.option("--cohort", default=None, help="Only this cohort.")
@click.option("--stage", default=None, help="Only this stage (candidate, validated, released, rolled_back, blocked).")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
def registry_list(name: str | None, cohort: str | None, stage: str | None, home: str | None) -> None:
    """Registered model versions and the aliases pointing at them."""
    from avops.registry import RegistryError

    reg = _open_registry(home)
    try:
        versions = reg.list(name=name, cohort=cohort, stage=stage)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"model versions in {reg.path}")
    for col in ("name", "version", "cohort", "stage", "aliases", "artifact", "created", "by"):
        table.add_column(col, justify="right" if col == "version" else "left",
                         no_wrap=col in ("name", "version", "stage"), overflow="fold")
    for v in versions:
        table.add_row(v.name, str(v.version), v.cohort, v.stage, ", ".join(reg.aliases(v.name, v.version)),
                      v.artifact_sha256[:12], v.created_at[:19], v.created_by)
    _print_wide(table)
    if not versions:
        console.print("[yellow]no model versions match[/]")


@registry_group.command("show")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
def registry_show(name: str, version: int, home: str | None) -> None:
    """Every field of one model version, with its lineage, metrics and aliases."""
    import json

    from avops.registry import RegistryError

    reg = _open_registry(home)
    try:
        v = reg.get(name, version)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"{v.name} v{v.version}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field in ("name", "version", "cohort", "stage", "artifact_sha256", "created_at", "created_by"):
        table.add_row(field, str(getattr(v, field)))
    table.add_row("aliases", ", ".join(reg.aliases(v.name, v.version)) or "-")
    table.add_row("lineage", json.dumps(v.lineage, indent=2, sort_keys=True))
    table.add_row("metrics", json.dumps(v.metrics, indent=2, sort_keys=True))
    _print_wide(table)


@registry_group.command("history")
@click.option("--name", default=None, help="Only this model.")
@click.option("--version", "version", type=int, default=None, help="Only this version.")
@click.option("--cohort", default=None, help="Only this cohort.")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
def registry_history(name: str | None, version: int | None, cohort: str | None, home: str | None) -> None:
    """Every registration, stage change and alias change, oldest first: who, what, when, why."""
    reg = _open_registry(home)
    events = reg.history(name=name, version=version, cohort=cohort)
    table = Table(title="model registry history")
    for col in ("id", "at", "actor", "kind", "model", "cohort", "alias", "change", "reason", "run"):
        table.add_column(col, no_wrap=col in ("id", "kind"), overflow="fold")
    for e in events:
        change = f"{e.from_value or '-'} -> {e.to_value or '-'}"
        model = e.name if e.version is None else f"{e.name} v{e.version}"
        table.add_row(str(e.id), e.at[:19], e.actor, e.kind, model, e.cohort or "", e.alias or "", change, e.reason,
                      e.run_id or "")
    _print_wide(table)
    if not events:
        console.print("[yellow]no history matches[/]")


if __name__ == "__main__":
    sys.exit(main())


# --- OTA ---------------------------------------------------------------------------------

@main.group("ota")
def ota_group() -> None:
    """Signed OTA metadata: rollback of one component, fleet-wide or per cohort."""


@ota_group.command("rollback")
@click.option("--component", required=True, help="The model component, e.g. perception.")
@click.option("--cohort", "cohorts", multiple=True, help="Cohort to roll back (repeatable).")
@click.option("--all-cohorts", is_flag=True, help="Every cohort that received the component.")
@click.option("--reason", default="operator rollback", show_default=True, help="Recorded in the registry history and release log.")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to use.")
def ota_rollback(component: str, cohorts: tuple[str, ...], all_cohorts: bool, reason: str, home: str | None) -> None:
    """Point COMPONENT back to its previous image (new metadata versions; other components untouched)."""
    from avops.home import layout
    from avops.ota.rollback import RollbackError, record_in_registry, rollback
    from avops.registry import RegistryError

    lay = layout(home)
    if all_cohorts:
        folder = lay.root / "ota" / "releases"
        cohorts = tuple(sorted(p.stem for p in folder.glob("*.jsonl"))) if folder.exists() else ()
    if not cohorts:
        raise click.ClickException("name --cohort C (repeatable) or --all-cohorts")
    reg = _open_registry(home)  # AVOPS_REGISTRY_URL (Postgres) when set, like every registry command
    table = Table(title=f"rollback of {component}")
    for col in ("cohort", "from", "to", "release counter", "other components untouched", "seconds"):
        table.add_column(col)
    failed = []
    for c in cohorts:
        try:
            rb = rollback(lay, c, component, reason)
        except RollbackError as exc:
            failed.append(f"{c}: {exc}")
            continue
        try:
            record_in_registry(reg, rb, "avops ota rollback", reason)
        except RegistryError as exc:
            console.print(f"[yellow]{c}: the release log records the rollback; the model registry could not: {exc}[/]")
        table.add_row(c, rb.from_path.rsplit("/", 1)[-1], rb.to_path.rsplit("/", 1)[-1], str(rb.release_counter),
                      ", ".join(rb.untouched) or "(none)", f"{rb.seconds:.2f}")
    console.print(table)
    if failed:
        raise click.ClickException("; ".join(failed))


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log: verify it, prove that an event is in it."""


@audit_group.command("verify")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
def audit_verify(home: str | None) -> None:
    """Re-check every entry and every signed tree head; exit 1 naming what was changed, dropped or reordered."""
    log = _open_registry(home).audit
    report = log.verify()
    head = log.head()
    if report.ok:
        console.print(f"[green]audit log intact[/]: {report.size} events, {report.heads} signed tree heads, "
                      f"root {report.root_hash[:16]}" + (f" (latest head {head.timestamp})" if head else ""))
        return
    for p in report.problems:
        console.print(f"[red]✗[/] {p}")
    console.print(f"[red]audit log verification failed[/]: {len(report.problems)} problem(s) in {report.size} events")
    sys.exit(1)


@audit_group.command("export")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
def audit_export(home: str | None) -> None:
    """Export the audit log and the registry history into the object store (local, or S3 by AVOPS_OBJECT_STORE)."""
    from avops.audit.log import export_to_store
    from avops.home import layout
    from avops.store import open_store

    lay = layout(home)
    store = open_store(lay)
    digest, ref = export_to_store(_open_registry(home), store, lay.refs)
    where = store.location(digest)
    console.print(f"[green]exported[/] {ref['events']} audit events and the registry history: {where} "
                  f"(root {ref['root_hash'][:16]}; ref audit/exports[latest])")


@audit_group.command("prove")
@click.argument("event_id", type=int)
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
def audit_prove(event_id: int, home: str | None) -> None:
    """Print (JSON, stdout) an inclusion proof of EVENT_ID against the latest signed tree head; check it with check-proof."""
    import json

    from avops.audit.log import AuditError

    try:
        click.echo(json.dumps(_open_registry(home).audit.prove(event_id), indent=2, sort_keys=True))
    except AuditError as exc:
        raise click.ClickException(f"{exc}; `avops audit verify` shows the log's size") from exc


@audit_group.command("check-proof")
@click.argument("proof", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trusted-head", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A tree head (JSON) published elsewhere that the proof's head must equal.")
def audit_check_proof(proof: Path, trusted_head: Path | None) -> None:
    """Check an inclusion proof offline: the event hashes to the leaf, the path leads to the signed root."""
    import json

    from avops.audit.log import check_proof

    bundle = json.loads(proof.read_text())
    problems = check_proof(bundle, trusted_head=json.loads(trusted_head.read_text()) if trusted_head else None)
    if problems:
        for p in problems:
            console.print(f"[red]✗[/] {p}")
        sys.exit(1)
    head = bundle["tree_head"]
    console.print(f"[green]proof holds[/]: event {bundle['leaf_index']} ({bundle['event']['kind']} {bundle['event']['subject']}) "
                  f"is in the log of size {head['tree_size']} with root {head['root_hash'][:16]}, signed {head['timestamp']}")


@main.group("dossier")
def dossier_group() -> None:
    """Compliance dossiers: check a copied dossier folder offline."""


def _key_file(path: Path | None):
    import json

    from securesystemslib.signer import Key

    if path is None:
        return None
    return {k: Key.from_dict(k, dict(v)) for k, v in json.loads(path.read_text()).items()}


@dossier_group.command("verify")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dossier-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Pinned dossier signing key(s) (JSON keyid -> public key); default: the folder's keys/dossier.json.")
@click.option("--audit-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Pinned audit log key(s); default: the folder's keys/audit.json.")
def dossier_verify(folder: Path, dossier_key: Path | None, audit_key: Path | None) -> None:
    """Offline: signature, every digest in the chain, the gate verdict, the audit log and the dossier's inclusion proof."""
    from avops.compliance.verify import verify_folder

    problems, notes = verify_folder(folder, _key_file(dossier_key), _key_file(audit_key))
    for n in notes:
        console.print(f"[dim]note: {n}[/]")
    if problems:
        for p in problems:
            console.print(f"[red]✗[/] {p}")
        console.print(f"[red]dossier does not verify[/]: {len(problems)} problem(s) in {folder}")
        sys.exit(1)
    console.print(f"[green]dossier verified[/]: signature, every artifact digest, the chain, the gate verdict and the "
                  f"audit log inclusion proof hold ({folder})")


@audit_group.command("consistency")
@click.argument("old_size", type=int)
@click.argument("new_size", type=int, required=False)
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to read.")
def audit_consistency(old_size: int, new_size: int | None, home: str | None) -> None:
    """Print (JSON) a consistency proof that the log of OLD_SIZE is a prefix of the log of NEW_SIZE (default: latest)."""
    import json

    from avops.audit.log import AuditError

    try:
        click.echo(json.dumps(_open_registry(home).audit.consistency(old_size, new_size), indent=2))
    except AuditError as exc:
        raise click.ClickException(f"{exc}; sizes with a signed head are listed by `avops audit verify`") from exc


@audit_group.command("approve")
@click.option("--subject", required=True, help="What is approved, e.g. perception/v7 or a dossier digest.")
@click.option("--by", "by", required=True, help="Who approves, with role, e.g. 'J. Doe, functional safety manager'.")
@click.option("--statement", required=True, help="What they approve and on what basis.")
@click.option("--home", type=click.Path(file_okay=False), default=None, help="AVOPS_HOME to write into.")
def audit_approve(subject: str, by: str, statement: str, home: str | None) -> None:
    """Record a person's approval (a sign-off) in the audit log; the next dossier of that model lists it."""
    import getpass

    receipt = _open_registry(home).audit.append("approval", subject, {"by": by, "statement": statement,
                                                                      "os_user": getpass.getuser()}, by)
    console.print(f"approval of {subject} by {by} logged as event {receipt.index} "
                  f"(tree head {receipt.head.tree_size}, root {receipt.head.root_hash[:16]})")
