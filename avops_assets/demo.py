"""``avops demo``: simulate the demo fleet and materialize the whole graph for every cohort."""

import json
import time

import click
from rich.table import Table

from avops.cli import console, progress_bar
from avops.fleet.simulator import Profile, simulate_fleet
from avops.home import layout
from avops.fleet_registry import load_registry
from avops.store import atomic_write_json, open_store
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
    from avops.battery.config import load_battery_config
    from avops.cli import run_battery_simulation

    # the cells first: each vehicle's traction pack on the CAN bus ages with its simulated cell
    run_battery_simulation(load_battery_config(), registry, lay, profile, None, until=_battery_first_delivery())
    with progress_bar() as bar:
        task = bar.add_task("simulating fleet", total=total, note="")
        sim = simulate_fleet(registry, lay, profile=profile, cohorts=selected,
                             progress=lambda r: bar.update(task, advance=1, note=r.drive_id))
    console.print(f"fleet: {sim.written} drive(s) written, {sim.skipped} already in {lay.landing}")

    instance = dg.DagsterInstance.get()
    if not _battery_round(instance, lay, registry, profile):
        raise click.ClickException("battery runs failed: open the UI (make ui) and look at the battery_fleet / battery_chemistry runs")
    existing = set(instance.get_dynamic_partitions(COHORTS))
    missing = [c for c in selected if c not in existing]
    if missing:
        instance.add_dynamic_partitions(COHORTS, missing)
    if not _occupant_round(instance, lay, list(selected)):
        raise click.ClickException("occupant monitoring runs failed: open the UI (make ui) and look at the federated_round runs")
    job = defs().resolve_job_def(MAIN_JOB)

    failed, outcomes = [], {}
    with progress_bar() as bar:
        task = bar.add_task("materializing", total=len(selected), note="")
        for cohort in selected:
            bar.update(task, note=cohort)
            t0 = time.monotonic()
            outcomes[cohort] = _outcome(_run(job, instance, cohort), time.monotonic() - t0)
            if outcomes[cohort]["status"] == "failed":
                failed.append(cohort)
            bar.update(task, advance=1)
    _print_runs("avops demo: materialized partitions", outcomes)
    _print_gates(lay, selected)
    _print_engines(lay, registry, selected)
    if not failed:
        _release(lay, selected)
        held = [c for c in selected if outcomes[c]["status"] == "blocked"]
        for c in held:  # what the automation runs next: a blocked component holds back only itself (compatibility is
            _propagate(instance, c, "compatibility")  # eager on any engine set), so what passed ships (the battery model)
        _ota(lay, registry, selected)
    if not failed:  # the season first: a campaign round later retrains every cohort's maintenance model anyway
        _drift_round(instance, registry, lay, profile, selected)
    if not failed and campaign_round:
        _campaign_round(job, instance, registry, lay, profile, selected)
    if not failed:
        _line_round(instance, lay)
    if not failed:
        _dossiers(instance, registry, lay, selected)
    console.print(
        f"outputs:  {lay.root}  (objects/, refs/, landing/, quarantine/, incidents/, registry/)\n"
        f"dagster:  {dagster_home}\n"
        f"open the UI: [bold]make ui[/] then http://127.0.0.1:3000  (assets, runs, checks and lineage)\n"
        f"total {time.monotonic() - started:.0f} s"
    )
    if failed:
        raise click.ClickException(f"runs failed for {', '.join(failed)}: open the UI (make ui) and look at the run logs")


def _outcome(result, seconds: float) -> dict:
    """success, blocked (only blocking checks failed: the gates did their job) or failed."""
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    blocking = sorted({e.event_specific_data.check_name for e in checks
                       if not e.event_specific_data.passed and e.event_specific_data.severity.value == "ERROR"})
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    gpu = [e.step_key for e in failures if any(m in _error(e) for m in ("unavailable on this host", "no engine is allowed"))]
    other = [e.step_key for e in failures if e.step_key not in gpu and not any(e.step_key.endswith(n) for n in blocking)]
    status = ("success" if result.success else "failed" if other or not failures else "blocked" if blocking else "needs GPU")
    if gpu and status == "blocked":
        status = "blocked"  # a gate stopped it; the GPU step is the lesser news
    return {"run": result.run_id[:8], "status": status, "assets": len(result.get_asset_materialization_events()),
            "checks": f"{sum(bool(e.event_specific_data.passed) for e in checks)}/{len(checks)}", "blocked_by": blocking,
            "seconds": seconds}


def _show(table: Table) -> None:
    """Tables are wide (cohorts x gates): when the output is not a terminal (make demo | tee), render 140 wide."""
    from rich.console import Console

    (console if console.is_terminal else Console(width=140)).print(table)


def _error(event) -> str:
    err = getattr(event.event_specific_data, "error", None)
    return "" if err is None else (err.message or "")


def _print_runs(title: str, outcomes: dict, key: str = "cohort") -> None:
    table = Table(title=title)
    for col in (key, "run", "status", "assets", "checks passed", "seconds"):
        table.add_column(col, no_wrap=col == key)
    colour = {"success": "green", "blocked": "yellow", "needs GPU": "cyan", "failed": "red"}
    for cohort, o in outcomes.items():
        status = f"[{colour[o['status']]}]{o['status']}[/]" + (f" by {', '.join(o['blocked_by'])}" if o["blocked_by"] else "")
        table.add_row(cohort, o["run"], status, str(o["assets"]), o["checks"], f"{o['seconds']:.1f}")
    _show(table)


def _print_gates(lay, cohorts: list[str]) -> None:
    """Cohorts x safety gates: the worst-case (95% lower bound) recall against the threshold."""
    from avops.training import pipeline as training

    rows = {}
    for c in cohorts:
        try:
            _, ev = training.current_evaluation(lay, c)
        except LookupError:
            continue
        rows[c] = ev
    if not rows:
        return
    first = next(iter(rows.values()))["gates"]
    table = Table(title="safety gates: 95% lower bound of recall per cohort  ✓ pass  ✗ blocks  ~ too few samples (warns)")
    table.add_column("gate")
    table.add_column("threshold", justify="right")
    for c in rows:
        table.add_column(c, justify="right")
    for i, g0 in enumerate(first):
        cells = []
        for ev in rows.values():
            g = ev["gates"][i]
            mark = {"pass": "[green]✓[/]", "fail": "[red]✗[/]"}.get(g["status"], "[red]✗[/]" if g["blocks"] else "[yellow]~[/]")
            cells.append(f"{g['lower_bound']:.2f} {mark}")
        table.add_row(g0["gate"], f"≥{g0['threshold']:.2f}", *cells)
    incidents = []
    for ev in rows.values():
        inc = ev["incidents"]
        incidents.append(f"{sum(i['passed'] for i in inc)}/{len(inc)}" + (f" [red]{len(ev['incident_regressions'])} regr.[/]" if ev["incident_regressions"] else ""))
    table.add_row("incidents passed", "", *incidents)
    _show(table)


def _print_engines(lay, registry, cohorts: list[str]) -> None:
    """Engines per cohort: what was built (precision, latency on target, worst parity drop) or why not."""
    from avops import datasets
    from avops.compile import pipeline as compiling
    from avops.compile.backends import ToolchainUnavailable
    from avops.compile.socs import load_catalog

    store, socs = open_store(lay), load_catalog()
    table = Table(title="compiled engines (checkpoint -> ONNX -> engine); latency is the target estimate")
    for col in ("cohort", "target", "engines", "status"):
        table.add_column(col, no_wrap=col == "cohort")
    for c in cohorts:
        soc = socs.get(registry.cohort(c).soc)
        for key, target in ((compiling.ENGINES, soc.id if soc else registry.cohort(c).soc), (compiling.SIL_ENGINES, "x86-ecu (SIL)")):
            m = datasets.current(store, lay.refs, key, c)
            if m is not None:
                parts = []
                for r in m.body["engines"]:
                    drops = [v["drop"] for v in r["parity"].get("slices", {}).values() if v["drop"] is not None]
                    lat = r["budget"].get("latency_ms_target_estimate")
                    parts.append(f"{r['precision']} {'' if lat is None else f'{lat:.2f} ms'} drop≤{max(drops or [0]):.3f}")
                ok = all(r["status"] == "ok" for r in m.body["engines"])
                table.add_row(c, target, "; ".join(parts), "[green]built[/]" if ok else "[red]blocked[/]")
                continue
            why = "not compiled: no validated checkpoint (blocked at the gates)"
            if key == compiling.ENGINES and soc is not None:
                try:
                    compiling.ensure_buildable(soc)
                except ToolchainUnavailable:
                    why = f"not buildable here ({soc.toolchain}): needs a GPU executor, job compile_engines_gpu" \
                        if soc.toolchain == "tensorrt" else f"not buildable here ({soc.toolchain})"
            table.add_row(c, target, "", f"[yellow]{why}[/]")
        components = (  # (engine set, what runs it, one engine's summary, show "skipped"?)
            (compiling.MAINTENANCE_ENGINES, "gateway (maintenance)", lambda r: (
                f"v{r['model_version']} {r['precision']} {r['budget'].get('latency_ms_target_estimate', 0):.3f} ms "
                f"|Δ|≤{max(x['max_abs_diff_mm'] for x in r['parity']['components'].values()):.0e} mm"), lambda why: True),
            (compiling.BMS_ENGINES, "BMS (battery SoH/RUL)", lambda r: (
                f"{r['chemistry']} v{r['model_version']} {r['precision']} {r['budget']['latency_ms_target_estimate']:.3f} ms "
                f"|ΔSoH|≤{r['parity']['targets']['soh']['max_abs_diff']:.3f}, {r['engine_bytes']} B"), lambda why: True),
            (compiling.DMS_ENGINES, "cabin (driver monitoring)", lambda r: (
                f"v{r['model_version']} {r['precision']} {r['budget']['latency_ms_target_estimate']:.2f} ms "
                f"agreement {r['parity']['agreement']:.3f}, {r['engine_bytes'] // 1024} KB"),
             lambda why: "has no production" not in why),  # cohorts outside the federated campaign: nothing to say
        )
        for key, runs_on, summary, show_skipped in components:
            m = datasets.current(store, lay.refs, key, c)
            if m is not None and m.body.get("skipped"):
                if show_skipped(m.body["skipped"]):
                    table.add_row(c, runs_on, "", f"[yellow]not compiled: {m.body['skipped']}[/]")
            elif m is not None:
                ok = all(r["status"] == "ok" for r in m.body["engines"])
                table.add_row(c, f"{m.body['soc']} {runs_on}", "; ".join(summary(r) for r in m.body["engines"]),
                              "[green]built[/]" if ok else "[red]blocked[/]")
    _show(table)


def _ota(lay, registry, cohorts: list[str], rollback_one: bool = False) -> None:
    """Roll every started package out on the simulated fleet (no soak in the demo), then time one rollback."""
    from datetime import datetime, timezone

    from avops.fleet.ecus import SimulatedVehicle
    from avops.ota.rollback import record_in_registry, rollback
    from avops.ota.uptane import metadata_state
    from avops.registry import ModelRegistry
    from avops.rollout import controller
    from avops.rollout.inbox import collect, deliver
    from avops.rollout.policy import load_rollout_policy
    from avops.rollout.store import RolloutStore
    from avops.rollout.reports import verify_report
    from avops.rollout.vehicle_keys import registered_keys

    _print_packages(lay, registry, cohorts)
    store, policy = RolloutStore.local(lay), load_rollout_policy(soak_seconds=0)
    if not [r for r in store.active() if r.cohort in cohorts]:
        console.print("[yellow]OTA: no new package to roll out (TensorRT cohorts need a GPU executor; cohorts blocked at the "
                      "gates are never compiled)[/]")
        if rollback_one:
            console.print("[yellow]OTA rollback: no cohort has received a second package (this round's candidates were blocked or "
                          "not built), so there is no previous image to roll back to; `avops ota rollback` would refuse for "
                          "the same reason[/]")
        return
    table = Table(title="OTA rollouts on the simulated fleet (signed post-boot reports; demo: no soak between waves)")
    for col in ("cohort", "rollout", "waves (vehicles)", "result", "healthy reports"):
        table.add_column(col, no_wrap=col == "cohort")
    rolled = []
    for r in store.active():
        if r.cohort not in cohorts:
            continue
        c = registry.cohort(r.cohort)
        ecu, hw = _ecu_of(lay, r.cohort, r.component)
        sims = {v: SimulatedVehicle(lay, c.id, v, hw, ecu=ecu) for v in r.vehicles}
        action, healthy = "waiting", 0
        for _ in range(len(r.waves) + 1):
            now = datetime.now(timezone.utc)
            for v in r.wave_vehicles():
                deliver(lay, r.rollout_id, v, sims[v].cycle(r.rollout_id, r.component, now))
            r, action, verdict = controller.step(lay, store, r, collect(lay, r.rollout_id), registered_keys(lay), policy)
            healthy = len(verdict.healthy)
            if action in ("complete", "rolled_back", "paused"):
                break
        table.add_row(r.cohort, f"{r.component} on {ecu}: {r.rollout_id}", " → ".join(str(n) for n in r.waves), action, f"{healthy}/{len(r.vehicles)}")
        if action == "complete":
            rolled.append(r)
    _show(table)
    if not rollback_one:
        return
    # a component rollback, timed, on the first cohort that has a previous image to go back to (perception first)
    for r in sorted(rolled, key=lambda r: r.component != "perception"):
        if r.previous_sha256 is None:
            continue
        before = metadata_state(lay)
        rb = rollback(lay, r.cohort, r.component, f"avops demo: roll {r.component} back fleet-wide")
        record_in_registry(ModelRegistry.local(lay), rb, "avops demo", "demo rollback")
        _print_rollback(rb, before, metadata_state(lay))
        c = registry.cohort(r.cohort)  # the fleet's next update cycle: every vehicle verifies and boots the old image
        ecu, hw = _ecu_of(lay, r.cohort, r.component)
        t0 = time.perf_counter()
        reports = [SimulatedVehicle(lay, c.id, v, hw, ecu=ecu).cycle(rb.rollout_id, r.component, datetime.now(timezone.utc))
                   for v in r.vehicles]
        keys = registered_keys(lay)
        verified = [verify_report(rep, keys)[0] for rep in reports]  # signed post-boot reports, not installer claims
        back = sum(v is not None and v.booted and v.installed_sha256 == rb.to_sha256 for v in verified)
        console.print(f"after the rollback: {back}/{len(r.vehicles)} vehicles of {c.id} verified, installed and booted "
                      f"{rb.to_path.rsplit('/', 1)[-1]} (release counter {rb.release_counter}) in {time.perf_counter() - t0:.1f} s")
        return
    console.print("[yellow]OTA rollback: no cohort has received two packages yet (the second round's candidates were "
                  "blocked or not built), so there is no previous image to roll back to[/]")


def _ecu_of(lay, cohort: str, component: str) -> tuple[str, str]:
    """The ECU (name, hardware id) the cohort's director assigns the component to."""
    from avops.rollout.controller import director_entry

    custom = director_entry(lay, cohort, component).unrecognized_fields.get("custom", {})
    return str(custom["ecu_identifier"]), str(custom["hardware_id"])


def _print_rollback(rb, before: dict, after: dict) -> None:
    """What a rollback re-signed (one director's targets, snapshot, timestamp) and what it left byte-identical."""
    console.print(f"[bold]OTA rollback[/] of {rb.component} for {rb.cohort}: {rb.from_path.rsplit('/', 1)[-1]} -> "
                  f"{rb.to_path.rsplit('/', 1)[-1]} (model v{rb.from_model_version} -> v{rb.to_model_version}) "
                  f"in {rb.seconds * 1000:.0f} ms, release counter {rb.release_counter}")
    table = Table(title="TUF/Uptane metadata before and after the rollback (version, sha256)")
    for col in ("repository", "role", "before", "after", ""):
        table.add_column(col)
    repos: dict[str, list[str]] = {}
    for key in sorted(set(before) | set(after)):
        repo, role = key.rsplit("/", 1)
        repos.setdefault(repo, []).append(role)
    for repo, roles in repos.items():
        changed = [r for r in roles if before.get(f"{repo}/{r}") != after.get(f"{repo}/{r}")]
        if not changed:
            table.add_row(repo, f"{len(roles)} roles", "", "", "[green]untouched (byte-identical)[/]")
            continue
        for role in roles:
            b, a = before.get(f"{repo}/{role}"), after.get(f"{repo}/{role}")
            fmt = (lambda v: "" if v is None else f"v{v[0]} {v[1][:10]}")
            table.add_row(repo, role, fmt(b), fmt(a), "[yellow]re-signed[/]" if a != b else "[green]untouched[/]")
    _show(table)
    others = ", ".join(rb.untouched) or "none in this cohort yet"
    console.print(f"other components' targets in the {rb.cohort} director, untouched: {others}")


def _print_packages(lay, registry, cohorts: list[str]) -> None:
    """Signed OTA packages per cohort: what was published (target, attestation, SBOM) or why there is none."""
    from avops import datasets
    from avops.ota.packages import why_no_package

    store = open_store(lay)
    table = Table(title="signed OTA packages (image + director repositories, SLSA provenance in DSSE, CycloneDX SBOM)")
    for col in ("cohort", "target", "release", "attestation", "SBOM", "status"):
        table.add_column(col, no_wrap=col == "cohort")
    for c in cohorts:
        m = datasets.current(store, lay.refs, "ota/packages", c)
        if m is not None:
            for r in datasets.read_table(store, m, "releases").to_pylist():
                table.add_row(c, r["path"].rsplit("/", 1)[-1], str(r["release_counter"]), r["attestation_sha256"][:12], r["sbom_sha256"][:12],
                              "[green]signed, published[/]")
            continue
        table.add_row(c, "", "", "", "", f"[yellow]no package: {why_no_package(lay, registry.cohort(c))}[/]")
    _show(table)


def _dossiers(instance, registry, lay, cohorts: list[str]) -> None:
    """A dossier per cohort (after the rollouts and the rollback, so its change log has them), checked offline.

    A cohort without a package gets the dossier of its latest evaluated model, which says why there is no package.
    """
    import shutil
    import tempfile
    from pathlib import Path

    import dagster as dg

    from avops import datasets
    from avops.compliance.verify import verify_folder
    from avops_assets.defs.compliance.assets import dossiers_asset
    from avops_assets.definitions import resources

    store = open_store(lay)
    table = Table(title="compliance dossiers (ISO 26262, SOTIF, ISO/PAS 8800, EU AI Act IV, UNECE R155/R156, GB/T, NHTSA)")
    for col in ("cohort", "gates", "open items", "avops dossier verify", "HTML"):
        table.add_column(col, no_wrap=col == "cohort")
    checked = None
    for c in cohorts:
        packaged = datasets.current(store, lay.refs, "ota/packages", c) is not None
        result = dg.materialize([dossiers_asset], partition_key=c, instance=instance, resources=resources(), raise_on_error=False,
                                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
        if not result.success:
            table.add_row(c, "", "", "[red]failed[/]", "see the run in the UI")
            continue
        meta = result.asset_materializations_for_node(dossiers_asset.op.name)[0].metadata
        folder = Path(meta["folder"].value)
        problems, _ = verify_folder(folder)
        packaged = packaged and not json.loads((folder / "dossier.json").read_text()).get("no_package")  # perception shipped
        table.add_row(c, ("" if packaged else "no perception package · ") + str(meta["gates_verdict"].value)[:48], str(meta["open_items"].value),
                      "[green]verified[/]" if not problems else f"[red]{len(problems)} problem(s)[/]", str(folder / "dossier.html"))
        checked = checked or (folder if packaged else None)
    _show(table)
    if checked is not None:  # the auditor's side: a copy with one changed byte must fail, naming what changed
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / checked.name
            shutil.copytree(checked, copy)
            html = copy / "dossier.html"
            html.write_bytes(html.read_bytes().replace(b"Safety gates", b"Safety Gates", 1))
            problems, _ = verify_folder(copy)
        console.print(f"tampered copy of {checked.name} (one byte of dossier.html): avops dossier verify -> "
                      f"[red]{problems[0] if problems else 'NOT DETECTED'}[/]")
        console.print(f"open a dossier: {checked / 'dossier.html'}  ·  check one: .venv/bin/avops dossier verify {checked}")


def _release(lay, cohorts: list[str]) -> None:
    """Stand-in for the OTA rollout: the first validated model of a cohort becomes its production model."""
    from avops.registry import ModelRegistry
    from avops.training import pipeline as training

    reg = ModelRegistry.local(lay)
    for c in cohorts:
        if training.production_version(reg, c) is not None:
            continue
        validated = reg.list(training.MODEL, cohort=c, stage="validated")
        if validated:
            v = validated[-1]
            training.release(reg, c, v.version, "avops demo", "bootstrap: first validated model of the cohort released by the demo "
                                                                "(stands in for a staged OTA rollout)")
            console.print(f"released {training.MODEL} v{v.version} as production for {c}")


def _run(job, instance, cohort: str):
    return job.execute_in_process(partition_key=cohort, instance=instance, raise_on_error=False,
                                  run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})


def _campaign_round(job, instance, registry, lay, profile: str, cohorts: list[str]) -> None:
    """Close the loop once for every cohort: collect its campaign, re-curate, retrain, gate against production, shadow."""
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
            campaign, cov = pipeline.campaign_for(lay, c, policy, drives_per_vehicle=2)
        except LookupError:
            continue
        if campaign is not None:
            plans[c] = (campaign, cov)
    if not plans:
        console.print("campaigns: every slice meets its target; no campaign round needed")
        return
    with progress_bar() as bar:
        task = bar.add_task("campaign drives", total=sum(registry.cohort(c).vehicle_count * p[0].drives_per_vehicle for c, p in plans.items()), note="")
        for c, (campaign, _) in plans.items():
            campaign.save(lay.root / "campaigns")
            simulate_fleet(registry, lay, profile=profile, campaign=campaign, progress=lambda r: bar.update(task, advance=1, note=r.drive_id))
    outcomes = {}
    with progress_bar() as bar:
        task = bar.add_task("round 2: re-curate, retrain, gate, shadow", total=len(plans), note="")
        for c in plans:
            bar.update(task, note=c)
            t0 = time.monotonic()
            outcomes[c] = _outcome(_run(job, instance, c), time.monotonic() - t0)
            bar.update(task, advance=1)
    _print_runs("round 2 (after the campaigns)", outcomes)
    failed = [c for c, o in outcomes.items() if o["status"] == "failed"]
    if failed:
        raise click.ClickException(f"the campaign round's runs failed for {', '.join(failed)}: open the UI (make ui) and look at the runs")
    _print_gates(lay, list(plans))
    _print_engines(lay, registry, list(plans))
    for c in plans:  # what the automation sensor does next: a component whose engine changed moves on without the others
        _propagate(instance, c, "compatibility")
    _ota(lay, registry, list(plans), rollback_one=True)
    rounds = []
    for c, (campaign, before) in plans.items():
        _, after = pipeline.campaign_for(lay, c, policy)
        rounds.append({"cohort": c, "campaign": campaign.id, "targeted": [t.slice for t in campaign.targets],
                       "rows": [[s.name, before.get(s.name, 0), after.get(s.name, 0), s.target_samples] for s in policy.slices],
                       "shadow": _shadow_rates(lay, c)})
    atomic_write_json(record, {"rounds": rounds})
    _print_round({"rounds": rounds})


def _propagate(instance, cohort: str, start: str):
    """Run what the automation sensor would run for one cohort, from ``start`` down to the rollout (eager, behind blocking checks)."""
    from avops_assets.definitions import MAIN_JOB, defs
    from avops_assets.defs.compile.assets import COMPATIBILITY, MAINTENANCE_ENGINES
    from avops_assets.defs.ota.assets import PACKAGES
    from avops_assets.defs.ota.rollouts import ROLLOUTS

    keys = ([MAINTENANCE_ENGINES] if start == "maintenance_engines" else []) + [COMPATIBILITY, PACKAGES, ROLLOUTS]
    return defs().resolve_job_def(MAIN_JOB).execute_in_process(
        partition_key=cohort, instance=instance, asset_selection=keys, raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}, tags={"avops/trigger": "automation"})


def _ship_maintenance(instance, registry, lay, cohort: str) -> None:
    """What the automation does after a retrain (eager, behind blocking checks): the new production model's gateway
    engine, the compatibility matrix, the signed package (only the changed component is re-released) and its rollout."""
    t0 = time.monotonic()
    result = _propagate(instance, cohort, "maintenance_engines")
    _print_runs("the retrained model to the fleet (maintenance engine -> compatibility -> package -> rollout)",
                {cohort: _outcome(result, time.monotonic() - t0)})
    if result.success:
        _print_engines(lay, registry, [cohort])
        _ota(lay, registry, [cohort])


def _print_maintenance(lay, reg, cohorts: list[str], title: str) -> None:
    from avops.maintenance import pipeline as pdm

    store = open_store(lay)
    table = Table(title=title)
    for col in ("cohort", "version", "stage", "held-out MAE (mm)", "cohort-mean MAE", "skill", "gates", "production"):
        table.add_column(col, no_wrap=col == "cohort")
    for c in cohorts:
        versions = reg.list(pdm.MODEL, cohort=c)
        if not versions:
            continue
        v = max(versions, key=lambda v: v.version)
        ev = store.get_json(v.lineage["evidence_sha256"])
        comp = ev["components"]["brake_pads"]
        gates = ", ".join(f"{g['gate'].split('.')[-1]} {'✅' if g['status'] == 'passed' else '⛔' if g['blocks'] else '⚠️'}" for g in ev["gates"])
        prod = pdm.production(reg, c)
        table.add_row(c, f"v{v.version}", v.stage, f"{comp['mae_mm']:.2f}", f"{comp['baseline_mae_mm']:.2f}", f"{comp['skill']:+.2f}",
                      gates, f"v{prod.version}" if prod else "none")
    _show(table)


def _drift_round(instance, registry, lay, profile: str, cohorts: list[str]) -> None:
    """Sensor-driven retrain: a recalibrated powertrain shifts one cohort's telemetry, the drift sensor notices it,
    requests one maintenance retrain for that cohort only, and the retrain goes through the gates."""
    import re

    import dagster as dg

    from avops.drift import monitor
    from avops.fleet.simulator import Season
    from avops.maintenance import pipeline as pdm
    from avops.maintenance.config import load_maintenance_config
    from avops.registry import ModelRegistry
    from avops_assets.definitions import defs, resources
    from avops_assets.defs.ingest import checks as ingest_checks
    from avops_assets.defs.ingest.assets import raw_drives
    from avops_assets.defs.maintenance.assets import drift as drift_report
    from avops_assets.jobs import RETRAIN_JOB
    from sensors.drift import drift_sensor

    reg = ModelRegistry.local(lay)
    _print_maintenance(lay, reg, cohorts, "maintenance models (brake pads; leave-one-vehicle-out evidence)")
    record = lay.root / "campaigns" / "demo_drift.json"
    if record.exists():
        console.print(f"drift round already done in this AVOPS_HOME: {json.loads(record.read_text())['summary']}")
        return
    older = [c for c in cohorts if int(re.search(r"-(\d{2})\.\d+$", registry.cohort(c).powertrain_calibration).group(1)) < 24
             and pdm.production(reg, c) is not None]
    if not older:
        console.print("drift round: no cohort on a pre-2024 powertrain calibration with a production maintenance model; skipped")
        return
    target = registry.cohort(older[0])
    new_cal = re.sub(r"-\d{2}\.\d+$", "-24.1", target.powertrain_calibration)
    res = resources()

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res) as ctx:
            return drift_sensor(ctx)

    job = defs().resolve_job_def(RETRAIN_JOB)
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    baseline = tick(None)  # every cohort looked at once
    console.print(f"drift sensor, first tick: {len(baseline.run_requests)} retrain request(s)"
                  + "".join(f"\n  {r.partition_key}: {r.tags['avops/reason']} (its production model predates the campaign drives)"
                            for r in baseline.run_requests))
    for req in baseline.run_requests:  # catch up first, so the season below is the only new thing
        job.execute_in_process(partition_key=req.partition_key, instance=instance, tags=req.tags, raise_on_error=False, run_config=quiet)
    if baseline.run_requests:
        baseline = tick(baseline.cursor)
    season = Season(f"recalibration-{target.id}", target.id, drives_per_vehicle=2, days_after_plan=150.0, powertrain_calibration=new_cal)
    sim = simulate_fleet(registry, lay, profile=profile, season=season)
    console.print(f"season: the OEM flashed {new_cal} onto {target.id} ({target.powertrain_calibration} before); "
                  f"its vehicles logged {sim.written} new drive(s), delivered to the landing zone")
    # ingest, and the drift report the automation would refresh after it (eager on new telemetry)
    report = dg.materialize([raw_drives, ingest_checks.stored_tables_match_digests, ingest_checks.tables_match_pandera_schemas,
                             drift_report], partition_key=target.id, instance=instance, resources=res, raise_on_error=True,
                            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    verdict = monitor.evaluate(lay, reg, target, load_maintenance_config())
    table = Table(title=f"drift of {target.id} since its production maintenance model v{verdict.model_version} was trained")
    for col in ("signal", "KS D", "", "BH p", "samples (ref / new)", "verdict"):
        table.add_column(col)
    for c in sorted(verdict.columns, key=lambda c: -c.statistic):
        table.add_row(c.column, f"{c.statistic:.3f}", "█" * int(round(min(1.0, c.statistic) * 20)), f"{c.pvalue_adjusted:.1e}",
                      f"{c.n_reference} / {c.n_current}", "[red]drift[/]" if c.drifted else c.reason)
    _show(table)
    md = [e.materialization.metadata for e in report.get_asset_materialization_events() if e.asset_key == drift_report.key]
    if md and "evidently_html" in md[0]:
        console.print(f"Evidently data-drift report (maintenance/drift): {md[0]['evidently_html'].value}")
    second = tick(baseline.cursor)
    console.print(f"drift sensor, next tick: {len(second.run_requests)} retrain request(s): "
                  + ", ".join(f"{r.partition_key} ({r.tags['avops/trigger']}: {r.tags['avops/reason']})" for r in second.run_requests))
    for req in second.run_requests:
        t0 = time.monotonic()
        result = job.execute_in_process(partition_key=req.partition_key, instance=instance, tags=req.tags, raise_on_error=False,
                                        run_config=quiet)
        _print_runs(f"drift-triggered retrain ({RETRAIN_JOB})", {req.partition_key: _outcome(result, time.monotonic() - t0)})
    _print_maintenance(lay, reg, [target.id], f"{target.id} after the drift-triggered retrain")
    if second.run_requests:
        _ship_maintenance(instance, registry, lay, target.id)
    summary = (f"{target.id} on {new_cal}: drift in {', '.join(verdict.drifted) or 'nothing'}; "
               f"{len(second.run_requests)} retrain request(s) for {', '.join(r.partition_key for r in second.run_requests) or 'no cohort'}")
    atomic_write_json(record, {"summary": summary, "verdict": verdict.to_dict()})


def _print_lines(lay, reg, line_ids: list[str], title: str) -> None:
    from avops.manufacturing import pipeline as insp

    store = open_store(lay)
    table = Table(title=title)
    for col in ("line", "version", "stage", "configuration", "defect recall [lower]", "false alarms [upper]", "gates", "production"):
        table.add_column(col, no_wrap=col == "line")
    for line_id in line_ids:
        versions = reg.list(insp.MODEL, cohort=line_id)
        if not versions:
            continue
        v = max(versions, key=lambda v: v.version)
        ev = store.get_json(v.lineage["evidence_sha256"])
        h, cfg = ev["held_out"], v.lineage["line_config"]
        prod = insp.production(reg, line_id)
        table.add_row(line_id, f"v{v.version}", v.stage,
                      f"{cfg['part_variant']}, camera y {cfg['camera'].get('y_px', 0)} px / {cfg['camera'].get('angle_deg', 0)}°, {cfg['lighting']['kind']}",
                      f"{h['recall']:.2f} [{h['recall_lower']:.2f}]", f"{h['false_alarm_rate']:.3f} [{h['false_alarm_upper']:.3f}]",
                      ", ".join(f"{g['gate']} {'✅' if g['status'] == 'passed' else '⛔'}" for g in ev["gates"]),
                      f"v{prod.version}" if prod else "none")
    _show(table)


def _line_round(instance, lay) -> None:
    """Manufacturing QC: an AOI model per line; a camera remounted on one line -> line_change_sensor -> one retrain."""
    import dagster as dg

    from avops.fleet.plant import simulate_shift
    from avops.manufacturing import pipeline as insp
    from avops.manufacturing.lines import load_lines
    from avops.registry import ModelRegistry
    from avops_assets.definitions import defs, resources
    from avops_assets.jobs import INSPECTION_JOB
    from avops_assets.partitions import LINES
    from sensors.lines import line_change_sensor

    record = lay.root / "campaigns" / "demo_lines.json"
    if record.exists():
        console.print(f"line round already done in this AVOPS_HOME: {json.loads(record.read_text())['summary']}")
        return
    lines, reg, res = load_lines(), ModelRegistry.local(lay), resources()
    missing = [i for i in lines.line_ids if i not in set(instance.get_dynamic_partitions(LINES))]
    if missing:
        instance.add_dynamic_partitions(LINES, missing)
    job = defs().resolve_job_def(INSPECTION_JOB)
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

    def retrain(line_id: str, tags: dict) -> dict:
        t0 = time.monotonic()
        result = job.execute_in_process(partition_key=line_id, instance=instance, tags=tags, raise_on_error=False, run_config=quiet)
        return _outcome(result, time.monotonic() - t0)

    with progress_bar() as bar:
        task = bar.add_task("AOI: ramp-up shift and first model per line", total=len(lines.lines), note="")
        outcomes = {}
        for line in lines.lines:
            bar.update(task, note=line.id)
            if insp.production(reg, line.id) is None:
                simulate_shift(lay, line, 0, lines.simulation, ramp_up=True)
                outcomes[line.id] = retrain(line.id, {"avops/trigger": "initial", "avops/reason": "first model of the line"})
            bar.update(task, advance=1)
    if outcomes:
        _print_runs(f"inspection models ({INSPECTION_JOB})", outcomes, key="line")
    _print_lines(lay, reg, lines.line_ids, "AOI inspection models per line (held-out audited parts)")

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res) as ctx:
            return line_change_sensor(ctx)

    baseline = tick(None)
    target = lines.lines[0]
    moved = dict(target.config(), camera={**target.camera, "y_px": target.camera.get("y_px", 0) + 6, "angle_deg": 12})
    table = Table(title="next shift: the deployed models at work (flagged parts judged by the rework station)")
    for col in ("line", "configuration", "parts", "defects", "flagged", "overturned by rework"):
        table.add_column(col)
    for line in lines.lines:
        inspect, version = insp.inspector(lay, reg, line.id)
        config = moved if line is target else None
        s = simulate_shift(lay, line, 1, lines.simulation, config=config, inspector=inspect, inspector_version=version,
                           ramp_up=line is target)
        table.add_row(line.id, "camera remounted: y +6 px, 12°" if line is target else "as before", str(s.parts), str(s.defects),
                      str(s.flagged), str(s.false_alarms))
    _show(table)
    second = tick(baseline.cursor)
    console.print(f"line_change_sensor: {len(second.run_requests)} retrain request(s): "
                  + ", ".join(f"{r.partition_key} ({r.tags['avops/reason']})" for r in second.run_requests))
    for req in second.run_requests:
        _print_runs(f"line-change retrain ({INSPECTION_JOB})", {req.partition_key: retrain(req.partition_key, req.tags)}, key="line")
    _print_lines(lay, reg, [r.partition_key for r in second.run_requests], "after the line-change retrain")
    summary = (f"{target.id}: camera remounted; {len(second.run_requests)} retrain request(s) for "
               f"{', '.join(r.partition_key for r in second.run_requests) or 'no line'}")
    atomic_write_json(record, {"summary": summary})


def _shadow_rates(lay, cohort: str) -> dict:
    from avops import datasets
    from avops.training import pipeline as training

    m = datasets.current(open_store(lay), lay.refs, training.SHADOW, cohort)
    if m is None:
        return {}
    rates = datasets.read_table(open_store(lay), m, "rates").to_pandas()
    return {"production": m.body["production_version"], "candidate": m.body["candidate_version"],
            "rates": [[r["slice"], int(r["frames"]), int(r["disagreeing"])] for r in rates.to_dict("records")]}


def _print_round(record: dict) -> None:
    for round_ in record.get("rounds", [record]):
        table = Table(title=f"campaign round for {round_['cohort']}: samples per slice in the curated selection")
        for col in ("slice", "before", "after", "target"):
            table.add_column(col, justify="right" if col != "slice" else "left")
        for name, before, after, target in round_["rows"]:
            mark = " (targeted)" if name in round_["targeted"] else ""
            table.add_row(name + mark, str(before), str(after), str(target))
        _show(table)
        sh = round_.get("shadow") or {}
        if sh:
            t = Table(title=f"shadow mode, {round_['cohort']}: candidate v{sh['candidate']} beside production v{sh['production']} on recent drives")
            for col in ("slice", "frames", "disagreeing", "rate"):
                t.add_column(col, justify="right" if col != "slice" else "left")
            for name, frames, dis in sh["rates"]:
                rate = dis / frames if frames else 0.0
                t.add_row(name, str(frames), str(dis), f"{rate:.2f} " + "█" * round(20 * rate))
            _show(t)


__all__ = ["demo_command"]


def _battery_round(instance, lay, registry, profile: str) -> bool:
    """Battery fleets: age the cells (PyBaMM, cached), ingest the BMS logs delivered so far, fit each chemistry's
    embedding, build the feature tables, export golden vectors and train the SoH/RUL models behind their gates
    (the main job's `compile/bms_engines` then ships each cohort's chemistry model to its BMS). Then the later
    tests arrive: the BMS landing sensor ingests them and the battery drift sensor judges their aging."""
    from avops.battery.config import load_battery_config
    from avops.cli import run_battery_simulation
    from avops_assets.definitions import defs
    from avops_assets.defs.battery.assets import CELLS, EMBEDDING, GOLDEN, REFERENCE_TESTS, SOH_MODELS
    from avops_assets.jobs import BATTERY_CHEMISTRY_JOB, BATTERY_FLEET_JOB
    from avops_assets.partitions import BATTERY_FLEETS

    config = load_battery_config()
    first_delivery = _battery_first_delivery()
    cells = run_battery_simulation(config, registry, lay, profile, None, until=first_delivery)
    console.print(f"battery fleets: {len(cells)} cells aged ({sum(c.cached for c in cells)} from the PyBaMM cache); BMS logs up to "
                  f"{first_delivery:%Y-%m-%d} delivered to {lay.bms} ({sum(c.written for c in cells)} new)")
    missing = [f for f in config.fleets if f not in set(instance.get_dynamic_partitions(BATTERY_FLEETS))]
    if missing:
        instance.add_dynamic_partitions(BATTERY_FLEETS, missing)
    d = defs()
    fleet_job, chem_job = d.resolve_job_def(BATTERY_FLEET_JOB), d.resolve_job_def(BATTERY_CHEMISTRY_JOB)
    outcomes: dict = {}
    with progress_bar() as bar:
        steps = 2 * len(config.fleets) + 2 * len(config.chemistries)
        task = bar.add_task("battery: ingest, embedding, features, models", total=steps, note="")
        for stage, keys, job, assets, label in (
                ("ingest", list(config.fleets), fleet_job, [REFERENCE_TESTS], "BMS logs"),
                ("embedding", list(config.chemistries), chem_job, [EMBEDDING], "embedding"),
                ("features", list(config.fleets), fleet_job, [CELLS], "features"),
                ("models", list(config.chemistries), chem_job, [GOLDEN, SOH_MODELS], "golden vectors + SoH/RUL model")):
            for k in keys:
                bar.update(task, note=f"{stage} {k}")
                outcomes[f"{k}: {label}"] = _battery_run(job, instance, k, assets)
                bar.update(task, advance=1)
    _print_runs("battery runs", outcomes, key="partition")
    _print_battery_models(lay, config)
    if any(o["status"] == "failed" for o in outcomes.values()):
        return False
    return _battery_drift_round(instance, lay, registry, profile, config)


BATTERY_FIRST_DAYS = 185  # the first delivery: about 150 cycles of a vehicle cell, 185 of a storage unit's


def _battery_first_delivery():
    from datetime import datetime, timedelta, timezone

    from avops.battery.config import load_battery_config

    start = datetime.fromisoformat(load_battery_config().start_date).replace(tzinfo=timezone.utc)
    return start + timedelta(days=BATTERY_FIRST_DAYS)


def _battery_run(job, instance, key: str, assets: list, tags: dict | None = None) -> dict:
    t0 = time.monotonic()
    r = job.execute_in_process(partition_key=key, instance=instance, asset_selection=assets, raise_on_error=False, tags=tags or {},
                               run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    return _outcome(r, time.monotonic() - t0)


def _print_battery_models(lay, config) -> None:
    from avops.battery import pipeline as bp
    from avops.registry import ModelRegistry

    reg = ModelRegistry.local(lay)
    table = Table(title="battery SoH/RUL models per chemistry (held-out cells; vehicle fleets and storage together)")
    for col in ("chemistry", "model", "cells", "gates", "SoH MAE on storage cells: vehicle-only → both",
                "RUL MAE (cycles) on storage cells: vehicle-only → both"):
        table.add_column(col)
    fmt = lambda x, p: "–" if x is None else f"{x:.{p}f}"  # noqa: E731
    for chem in config.chemistries:
        versions = reg.list(bp.MODEL, cohort=chem)
        if not versions:
            table.add_row(chem, "none", "–", "–", "–", "–")
            continue
        newest, prod = max(versions, key=lambda x: x.version), bp.production(reg, chem)
        ev = open_store(lay).get_json(newest.lineage["evidence_sha256"])
        gates = ev["gates"]
        gen = {(g["target"], g["trained_on"], g["evaluated_on"]): g["mae"] for g in ev["generalization"]}
        cell = "held-out stationary cells"
        table.add_row(chem, f"v{newest.version} {newest.stage}" + (f" (production v{prod.version})" if prod and prod.version != newest.version else ""),
                      str(ev["cells"]), f"{sum(g['status'] == 'passed' for g in gates)}/{len(gates)} pass, "
                                        f"{sum(g['blocks'] for g in gates)} block",
                      f"{fmt(gen.get(('soh', 'vehicle_only', cell)), 4)} → {fmt(gen.get(('soh', 'both', cell)), 4)}",
                      f"{fmt(gen.get(('rul_cycles', 'vehicle_only', cell)), 1)} → {fmt(gen.get(('rul_cycles', 'both', cell)), 1)}")
    _show(table)


def _battery_drift_round(instance, lay, registry, profile: str, config) -> bool:
    """Months later: the rest of the reference tests land. bms_landing_sensor ingests them; battery_drift_sensor
    judges each fleet's new tests against the aging the production model was trained on (not against day one)."""
    import dagster as dg

    from avops.battery import pipeline as bp
    from avops.cli import run_battery_simulation
    from avops.registry import ModelRegistry
    from avops_assets.definitions import defs, resources
    from avops_assets.jobs import BATTERY_CHEMISTRY_JOB, BATTERY_FLEET_JOB
    from sensors.battery import battery_drift_sensor, bms_landing_sensor

    record = lay.root / "campaigns" / "demo_battery_drift.json"
    if record.exists():
        console.print(f"battery drift round already done in this AVOPS_HOME: {json.loads(record.read_text())['summary']}")
        return True
    res, d = resources(), defs()

    def tick(sensor, cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res) as ctx:
            return sensor(ctx)

    landing0, drift0 = tick(bms_landing_sensor, None), tick(battery_drift_sensor, None)  # what is there now is known
    cells = run_battery_simulation(config, registry, lay, profile, None)
    console.print(f"months later: {sum(c.written for c in cells)} more BMS reference-test log(s) delivered")
    landing = tick(bms_landing_sensor, landing0.cursor)
    fleet_job = d.resolve_job_def(BATTERY_FLEET_JOB)
    outcomes = {f"{r.partition_key}: ingest, features, drift": _battery_run(fleet_job, instance, r.partition_key, list(r.asset_selection or []), r.tags)
                for r in landing.run_requests}
    _print_runs(f"bms_landing_sensor: {len(landing.run_requests)} run(s) ({BATTERY_FLEET_JOB})", outcomes, key="partition")
    drift = tick(battery_drift_sensor, drift0.cursor)
    reg = ModelRegistry.local(lay)
    table = Table(title="battery drift: the new tests against the expected aging at their age (and the naive day-one test)")
    for col in ("fleet", "new tests (cells)", "ages (cycles)", "aging-aware verdict", "naive day-one test would flag"):
        table.add_column(col, no_wrap=col == "fleet")
    verdicts = {}
    for fleet in config.fleets:
        out = bp.fleet_drift(lay, reg, config, fleet)
        if out is None:
            continue
        _, r = out
        verdicts[fleet] = r.verdict
        ages = f"{r.ages[0]:.0f}–{r.ages[1]:.0f}" if r.ages else "–"
        colour = {"drift": "red", "no drift": "green"}.get(r.verdict, "yellow")
        table.add_row(fleet, f"{r.rows} ({r.cells})", ages, f"[{colour}]{r.verdict}[/]" + (f": {', '.join(r.drifted_features)}" if r.drifted else ""),
                      ", ".join(r.naive_drifted) or "nothing")
    _show(table)
    console.print(f"battery_drift_sensor: {len(drift.run_requests)} retrain request(s)"
                  + "".join(f"\n  {r.partition_key}: {r.tags['avops/reason']}" for r in drift.run_requests))
    chem_job = d.resolve_job_def(BATTERY_CHEMISTRY_JOB)
    retrains = {f"{r.partition_key}: drift retrain": _battery_run(chem_job, instance, r.partition_key, list(r.asset_selection or []), r.tags)
                for r in drift.run_requests}
    if retrains:
        _print_runs("drift-triggered battery retrains", retrains, key="partition")
    summary = (f"{len(landing.run_requests)} fleet(s) ingested new tests; verdicts: "
               + ", ".join(f"{f} {v}" for f, v in verdicts.items()) + f"; {len(drift.run_requests)} retrain request(s)")
    atomic_write_json(record, {"summary": summary})
    return all(o["status"] != "failed" for o in [*outcomes.values(), *retrains.values()])


def _occupant_round(instance, lay, selected: list[str]) -> bool:
    """Occupant monitoring for the federated cohorts: consented sessions and the studio model, then a few
    federated rounds (Flower; DP-SGD in every vehicle; each round's no-upload audit and budget are blocking
    checks), then the gated model (the main job's `compile/dms_engines` ships it to the in-cabin ECU)."""
    import dagster as dg

    from avops.cli import run_cabin_simulation
    from avops.occupant import pipeline as op
    from avops.occupant.config import load_occupant_config, round_key
    from avops.occupant.report import bar as ascii_bar
    from avops_assets.definitions import defs
    from avops_assets.defs.occupant.assets import CONSENTED, DMS_MODEL, ROUNDS, STUDIO
    from avops_assets.jobs import FEDERATED_ROUND_JOB, OCCUPANT_JOB

    config = load_occupant_config()
    cohorts = [c for c in config.federated.cohorts if c in selected]
    if not cohorts:
        return True
    run_cabin_simulation(config, lay, cohorts)
    d = defs()
    cohort_job, round_job = d.resolve_job_def(OCCUPANT_JOB), d.resolve_job_def(FEDERATED_ROUND_JOB)
    outcomes: dict = {}
    with progress_bar() as bar:
        task = bar.add_task("occupant monitoring: federated rounds", total=len(cohorts) * (config.federated.rounds + 2), note="")
        for c in cohorts:
            bar.update(task, note=f"{c}: consented sessions, studio model")
            outcomes[f"{c}: studio model"] = _battery_run(cohort_job, instance, c, [CONSENTED, STUDIO])
            bar.update(task, advance=1)
            for n in range(1, config.federated.rounds + 1):
                rnd = round_key(n)
                bar.update(task, note=f"{c}: round {rnd}")
                if op.round_manifest(lay, c, rnd) is None:
                    outcomes[f"{c}|{rnd}: federated round"] = _battery_run(round_job, instance, dg.MultiPartitionKey({"cohort": c, "round": rnd}),
                                                                           [ROUNDS])
                bar.update(task, advance=1)
            bar.update(task, note=f"{c}: slice gates")
            outcomes[f"{c}: gated model"] = _battery_run(cohort_job, instance, c, [DMS_MODEL])
            bar.update(task, advance=1)
    _print_runs("occupant monitoring runs", outcomes, key="partition")
    store = op.open_store(lay)
    for c in cohorts:
        rounds = [m.body for m in op.rounds_done(lay, config, c, store)]
        t = Table(title=f"federated rounds of {c}: what left the vehicles (model updates only) and the privacy budget")
        for col in ("round", "vehicles", "dropped", "ε spent (max vehicle)", "", "no cabin data uploaded"):
            t.add_column(col)
        cap = config.federated.dp.max_epsilon
        for b in rounds:
            t.add_row(b["round"], str(len(b["participants"])), str(len(b["dropped"])), f"{b['epsilon_max']:.2f} of {cap:g} (δ={b['dp']['delta']:g})",
                      ascii_bar(b["epsilon_max"] / cap, 12), "[green]proved[/]" if b["audit"]["passed"] else f"[red]{len(b['audit']['findings'])} finding(s)[/]")
        _show(t)
        m = op.datasets.current(store, lay.refs, op.MODEL_KEY, c)
        if m is not None:
            slices = op.datasets.read_table(store, m, "slices").to_pandas()
            t = Table(title=f"driver monitoring model v{m.body['version']} of {c} ({m.body['stage']}): accuracy per slice, held-out test vehicles")
            for col in ("slice", "frames", "accuracy", ""):
                t.add_column(col)
            for r in slices.itertuples():
                name = "overall" if r.attribute == "all" else f"{r.attribute}={r.value}"
                colour = "green" if r.accuracy >= (config.gates.overall_min if r.attribute == "all" else config.gates.slice_min) else "red"
                t.add_row(name, str(r.frames), f"[{colour}]{r.accuracy:.3f}[/]", ascii_bar(r.accuracy, 20))
            _show(t)
    return not any(o["status"] == "failed" for o in outcomes.values())
