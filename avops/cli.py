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


if __name__ == "__main__":
    sys.exit(main())
