"""The whole graph from the Dagster UI, in a real browser (headless Chromium driven by Playwright).

A person's path: open the main job's asset graph, pick one cohort partition, materialize the
whole graph, watch the run succeed, open a package's lineage and the dossier asset. Then a
planted fault (the safety gate policy raised beyond what the model can show) and a re-run of the
evaluation from the asset page: the UI must show the failed gate as a failed *blocking* check.
Screenshots go to ``test-artifacts/ui/``. The webserver and the daemon run on 127.0.0.1 in the
production profile, set by configuration alone: the Dagster instance, the model registry and the
audit log in a throwaway PostgreSQL, objects, tables and refs on S3 (moto's server), and the
multiprocess executor.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
COHORT = "rcarv4h-my2025-eu"  # the ONNX Runtime cohort: built, packaged and dossier'd on a CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _wait(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                log = Path(p.args[0]).name
                pytest.fail(f"{what}: {log} exited: {getattr(p, 'log', Path('/dev/null')).read_text()[-3000:]}")
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _server(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


RUNS = """query($cohort: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $cohort}]}, limit: 10) {
  ... on Runs { results { runId status jobName assetSelection { path } } } } }"""
SENSORS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors { id name sensorState { status } } } } } }"""
STOP = """mutation($id: String!) { stopSensor(id: $id) { __typename } }"""


def _runs(port: int) -> list[dict]:
    return _graphql(port, RUNS, {"cohort": COHORT})["data"]["runsOrError"]["results"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, postgres_url, s3):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`; .ci/run does it)")
    from avops.fleet.simulator import simulate_fleet
    from avops.fleet_registry import load_registry
    from avops.home import HomeLayout

    root = tmp_path_factory.mktemp("ui")
    fleet = yaml.safe_load((ROOT / "config" / "fleet.yaml").read_text())
    fleet["cohorts"] = [c for c in fleet["cohorts"] if c["id"] == COHORT]
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    shutil.copy(ROOT / "config" / "safety_gates.yaml", root / "gates.yaml")
    home = HomeLayout(root / "avops")
    simulate_fleet(load_registry(root / "fleet.yaml"), home)
    dagster_home = root / "dagster"
    (dagster_home / ".nux").mkdir(parents=True)
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    # the production storage profile: Postgres for runs, events and schedules (a webserver, a daemon and run
    # workers share it; SQLite is for one person's laptop)
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("CREATE DATABASE dagster_ui")
        con.execute("CREATE DATABASE avops_ui_registry")
    instance = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    pg = postgres_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://") + "/dagster_ui"
    instance["storage"] = {"postgres": {"postgres_url": pg}}
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "AVOPS_HOME": str(home.root), "AVOPS_FLEET_REGISTRY": str(root / "fleet.yaml"),
           "AVOPS_SAFETY_GATES": str(root / "gates.yaml"),
           # the production profile by configuration alone: a process per step, objects and refs on S3 (moto's server
           # on 127.0.0.1), the model registry and audit log on Postgres
           "AVOPS_EXECUTOR": "multiprocess", "AVOPS_OBJECT_STORE": s3.url("ui"),
           "AVOPS_REGISTRY_URL": postgres_url.rsplit("/", 1)[0] + "/avops_ui_registry"}
    subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().add_dynamic_partitions('cohorts', "
                    f"[{COHORT!r}])"], env=env, check=True, cwd=ROOT)
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    # server output goes to files: a pipe nobody reads fills up and blocks every process writing to it
    # (run workers inherit the daemon's stderr)
    web = _server([str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
                  env, root / "webserver.log")
    procs = [web]
    try:
        sensors = _wait(lambda: _graphql(port, SENSORS)["data"]["repositoriesOrError"]["nodes"][0]["sensors"], 120, "the webserver", procs)
        for s in sensors:  # a person would switch automation off for a controlled run: nothing else may start runs here
            if s["sensorState"]["status"] == "RUNNING":
                _graphql(port, STOP, {"id": s["id"]})
        daemon = _server([str(bin_dir / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], env, root / "daemon.log")
        procs.append(daemon)
        from playwright.sync_api import sync_playwright

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            yield {"page": page, "base": f"http://127.0.0.1:{port}", "port": port, "procs": procs, "root": root, "home": home}
            browser.close()
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _launch_partition(page, button: re.Pattern) -> None:
    """Click a materialize button, choose the cohort partition in the launch dialog, launch one run."""
    page.get_by_role("button", name=button).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    # compile/bms_engines reads the battery models (partitioned by chemistry, their own job): on a fleet without
    # them the UI warns that battery/soh_models was never materialized; the cohort then gets an empty BMS engine set
    warning = page.get_by_role("dialog").filter(has_text="have not been materialized yet")
    warning.or_(dialog).first.wait_for()
    if warning.is_visible():
        assert "battery / soh_models" in warning.inner_text()
        warning.get_by_role("button", name="Confirm").click()
    # the partition menu re-renders while the dialog polls (a busy machine can detach the item under the cursor for
    # a minute): open it and pick the cohort again rather than wait on a detached element
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(5):
        try:
            if not page.get_by_role("menuitem", name=COHORT).is_visible():
                dialog.get_by_text("Select a partition or create one").click(timeout=15_000)
            page.get_by_role("menuitem", name=COHORT).click(timeout=15_000)
            break
        except PlaywrightTimeout:
            if attempt == 4:
                raise
    dialog.get_by_role("button", name=re.compile("Launch 1 run")).click()


def _finished(ui, before: set[str], timeout: float) -> dict:
    def done():
        new = [r for r in _runs(ui["port"]) if r["runId"] not in before]
        return new[0] if new and new[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None
    return _wait(done, timeout, "the run launched from the UI to finish", ui["procs"])


@pytest.fixture()
def page_on_failure(ui, request):
    """On a failure, the page as it was: a screenshot and its text beside the others."""
    yield ui
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        ui["page"].screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
        (ARTIFACTS / "failure.txt").write_text(ui["page"].url + "\n" + ui["page"].inner_text("body"))


@pytest.mark.slow
def test_whole_graph_from_the_ui_then_a_failed_gate_shows_as_a_failed_blocking_check(page_on_failure):
    ui = page_on_failure
    page, base = ui["page"], ui["base"]
    page.goto(f"{base}/locations/avops/jobs/avops_main")
    page.get_by_role("button", name=re.compile("Materialize all")).first.wait_for()
    page.get_by_text("training").first.wait_for()  # the graph, grouped by stage
    page.screenshot(path=str(ARTIFACTS / "01-job-asset-graph.png"))
    before = {r["runId"] for r in _runs(ui["port"])}
    _launch_partition(page, re.compile("Materialize all"))
    run = _finished(ui, before, 900)
    page.goto(f"{base}/runs/{run['runId']}")
    page.get_by_text(re.compile("Success|Failure")).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "02-run.png"), full_page=True)
    assert run["status"] == "SUCCESS", f"the whole-graph run for {COHORT} ended {run['status']}: see {ARTIFACTS / '02-run.png'}"

    page.goto(f"{base}/assets/ota/packages?view=lineage")
    page.get_by_text("compatibility").first.wait_for()  # its inputs ...
    page.get_by_text("dossiers").first.wait_for()  # ... and what was made from it
    page.screenshot(path=str(ARTIFACTS / "03-package-lineage.png"))
    page.get_by_role("button", name=re.compile("Upstream")).click()
    page.get_by_role("button", name="All", exact=True).click()
    # the whole upstream graph (perception, maintenance, battery, occupant) is larger than the window, and the graph
    # draws only what is in view: zoom out, as a person would, until training is in view
    zoom_out = page.locator("button:has([aria-label=zoom_out])").first
    for _ in range(20):
        if page.get_by_text("checkpoints", exact=True).count():
            break
        zoom_out.click()
        page.wait_for_timeout(200)
    page.get_by_text("checkpoints", exact=True).first.wait_for()  # up through training and curation
    page.get_by_text("rounds", exact=True).first.wait_for()  # and the federated rounds of the cabin model
    for _ in range(5):  # the whole graph in the screenshot
        zoom_out.click()
    page.wait_for_timeout(1000)
    page.get_by_text("released_sets", exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "03b-package-upstream-lineage.png"))
    page.goto(f"{base}/assets/compliance/dossiers")
    page.get_by_text(re.compile("dossier", re.I)).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "04-dossier-asset.png"), full_page=True)
    assert "compliance" in page.content()

    # the planted fault: a policy no model of this fleet can meet, then the evaluation re-run from its asset page
    gates = ui["root"] / "gates.yaml"
    policy = yaml.safe_load(gates.read_text())
    policy["gates"]["overall"].update(min_lower_bound=0.99)
    gates.write_text(yaml.safe_dump(policy))
    page.goto(f"{base}/assets/training/evaluation")
    before = {r["runId"] for r in _runs(ui["port"])}
    _launch_partition(page, re.compile(r"Materialize(?! all)"))
    blocked = _finished(ui, before, 600)
    page.goto(f"{base}/assets/training/evaluation?view=checks")
    page.get_by_text("gate_overall").first.wait_for()
    page.get_by_text("gate_overall").first.click()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "05-failed-gate.png"), full_page=True)
    listing = page.inner_text("body")
    status = re.search(r"gate_overall\s+gate_overall\s+(\w+)", listing)
    assert status and status.group(1) == "Failed", f"the checks tab should list gate_overall as Failed: {listing[:2000]!r}"
    checks = _graphql(ui["port"], '{ assetNodes(assetKeys: [{path: ["training", "evaluation"]}]) { assetChecksOrError { '
                                  '... on AssetChecks { checks { name blocking } } } } }')["data"]["assetNodes"][0]
    assert {c["name"]: c["blocking"] for c in checks["assetChecksOrError"]["checks"]}["gate_overall"], "the UI's check is blocking"
    assert blocked["status"] == "FAILURE", "a failed blocking check fails the run"
