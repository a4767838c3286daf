"""``avops demo``: simulate the demo fleet and materialize the whole graph for every cohort."""

import json
import time

import click
from rich.table import Table

from avops.cli import console, progress_bar
from avops.fleet.simulator import Profile, simulate_fleet
from avops.home import layout
from avops.fleet_registry import load_registry
from avops.store import atomic_write_json
from avops_assets.instance import ensure_dagster_home


@click.command("demo")
@click.option("--profile", default="demo", show_default=True, help="Simulation profile (demo or full).")
@click.option("--cohort", "cohorts", multiple=True, help="Only these cohorts (repeatable).")
@click.option("--campaign-round/--no-campaign-round", default=True, show_default=True,
              help="After the first pass, run one collection campaign and show the coverage it adds.")
def demo_command(profile: str, cohorts: tuple[str, ...], campaign_round: bool) -> None:
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
    if not failed and campaign_round:
        _campaign_round(job, instance, registry, lay, profile, selected)
    console.print(
        f"outputs:  {lay.root}  (objects/, refs/, landing/, quarantine/)\n"
        f"dagster:  {dagster_home}\n"
        f"open the UI: [bold]make ui[/] then http://127.0.0.1:3000  (assets, runs, checks and lineage)\n"
        f"total {time.monotonic() - started:.0f} s"
    )
    if failed:
        raise click.ClickException(f"runs failed for {', '.join(failed)}: open the UI (make ui) and look at the run logs")


def _run(job, instance, cohort: str):
    return job.execute_in_process(partition_key=cohort, instance=instance, raise_on_error=False,
                                  run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})


def _campaign_round(job, instance, registry, lay, profile: str, cohorts: list[str]) -> None:
    """Close the loop once: the cohort with the largest coverage gap collects its campaign, then re-curates."""
    from avops.curation import pipeline
    from avops.curation.policy import load_policy

    policy = load_policy()
    record = lay.root / "campaigns" / "demo_round.json"
    if record.exists():  # one round per AVOPS_HOME keeps reruns fast and the landing zone stable
        console.print(f"campaign round already done in this AVOPS_HOME: {record}")
        _print_round(json.loads(record.read_text()))
        return
    plans = {}
    for c in cohorts:
        try:
            campaign, cov = pipeline.campaign_for(lay, c, policy)
        except LookupError:
            continue
        if campaign is not None:
            plans[c] = (campaign, cov)
    if not plans:
        console.print("campaigns: every slice meets its target; no campaign round needed")
        return
    cohort, (campaign, before) = max(plans.items(), key=lambda kv: sum(1 - t.have / t.target for t in kv[1][0].targets))
    path = campaign.save(lay.root / "campaigns")
    targets = ", ".join(f"{t.slice} ({t.have}/{t.target})" for t in campaign.targets)
    console.print(f"campaign {campaign.id} for {cohort}: collect {targets}  ->  {path}")
    with progress_bar() as bar:
        task = bar.add_task("campaign drives", total=registry.cohort(cohort).vehicle_count * campaign.drives_per_vehicle, note="")
        simulate_fleet(registry, lay, profile=profile, campaign=campaign, progress=lambda r: bar.update(task, advance=1, note=r.drive_id))
    with progress_bar() as bar:
        task = bar.add_task("re-curating", total=1, note=cohort)
        result = _run(job, instance, cohort)
        bar.update(task, advance=1)
    if not result.success:
        raise click.ClickException(f"the campaign round's run for {cohort} failed: open the UI (make ui) and look at run {result.run_id}")
    _, after = pipeline.campaign_for(lay, cohort, policy)
    round_ = {"cohort": cohort, "campaign": campaign.id, "targeted": [t.slice for t in campaign.targets],
              "rows": [[s.name, before.get(s.name, 0), after.get(s.name, 0), s.target_samples] for s in policy.slices]}
    atomic_write_json(record, round_)
    _print_round(round_)


def _print_round(round_: dict) -> None:
    table = Table(title=f"campaign round for {round_['cohort']}: samples per slice in the curated selection")
    for col in ("slice", "before", "after", "target"):
        table.add_column(col, justify="right" if col != "slice" else "left")
    for name, before, after, target in round_["rows"]:
        mark = " (targeted)" if name in round_["targeted"] else ""
        table.add_row(name + mark, str(before), str(after), str(target))
    console.print(table)


__all__ = ["demo_command"]
