"""``avops demo``: simulate the demo fleet and materialize the whole graph for every cohort."""

import os
import time

import click
from rich.table import Table

from avops.cli import console, progress_bar
from avops.fleet.simulator import Profile, simulate_fleet
from avops.home import layout
from avops.registry import load_registry
from avops_assets.instance import ensure_dagster_home


@click.command("demo")
@click.option("--profile", default="demo", show_default=True, help="Simulation profile (demo or full).")
@click.option("--cohort", "cohorts", multiple=True, help="Only these cohorts (repeatable).")
def demo_command(profile: str, cohorts: tuple[str, ...]) -> None:
    """Simulate a small fleet, then run the main job for every cohort on embedded defaults."""
    import dagster as dg

    from avops_assets.definitions import MAIN_JOB, defs
    from avops_assets.partitions import COHORTS

    started = time.monotonic()
    dagster_home = ensure_dagster_home()
    lay = layout()
    registry = load_registry()
    selected = list(cohorts) or registry.cohort_ids
    prof = Profile.from_registry(registry, profile)
    total = sum(registry.cohort(c).vehicle_count for c in selected) * prof.drives_per_vehicle
    with progress_bar() as bar:
        task = bar.add_task("simulating fleet", total=total, note="")
        sim = simulate_fleet(registry, lay, profile=profile, cohorts=selected,
                             progress=lambda r: bar.update(task, advance=1, note=r.drive_id))
    console.print(f"fleet: {sim.written} drive(s) written, {sim.skipped} already in {lay.landing}")

    instance = dg.DagsterInstance.get()
    existing = set(instance.get_dynamic_partitions(COHORTS))
    missing = [c for c in selected if c not in existing]
    if missing:
        instance.add_dynamic_partitions(COHORTS, missing)
    job = defs().resolve_job_def(MAIN_JOB)

    summary = Table(title="avops demo: materialized partitions")
    for col in ("cohort", "run", "status", "assets", "checks passed", "seconds"):
        summary.add_column(col)
    failed = []
    with progress_bar() as bar:
        task = bar.add_task("materializing", total=len(selected), note="")
        for cohort in selected:
            bar.update(task, note=cohort)
            t0 = time.monotonic()
            result = job.execute_in_process(
                partition_key=cohort, instance=instance, raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            mats = result.get_asset_materialization_events()
            checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
            passed = sum(bool(e.event_specific_data.passed) for e in checks)
            status = "[green]success[/]" if result.success else "[red]failed[/]"
            if not result.success:
                failed.append(cohort)
            summary.add_row(cohort, result.run_id[:8], status, str(len(mats)), f"{passed}/{len(checks)}", f"{time.monotonic() - t0:.1f}")
            bar.update(task, advance=1)
    console.print(summary)
    console.print(
        f"outputs:  {lay.root}  (objects/, refs/, landing/, quarantine/)\n"
        f"dagster:  {dagster_home}\n"
        f"open the UI: [bold]make ui[/] then http://127.0.0.1:3000  (assets, runs, checks and lineage)\n"
        f"total {time.monotonic() - started:.0f} s"
    )
    if failed:
        raise click.ClickException(f"runs failed for {', '.join(failed)}: open the UI (make ui) and look at the run logs")


__all__ = ["demo_command", "os"]
