"""`make ui` serves the code location: a real dagster-webserver on 127.0.0.1 lists our assets."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUERY = ("{ assetNodes { assetKey { path } groupName description isPartitioned "
         "assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_webserver_lists_every_asset(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "AVOPS_HOME": str(tmp_path / "avops")}
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        nodes = None
        while time.monotonic() < deadline:
            try:
                data = _graphql(port, QUERY)
                nodes = data.get("data", {}).get("assetNodes")
                if nodes:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"webserver exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(1)
        assert nodes, "webserver never listed the assets"
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert by_key["ingest/raw_drives"]["groupName"] == "ingest"
        assert by_key["ingest/raw_drives"]["isPartitioned"]
        assert "landing" in by_key["ingest/raw_drives"]["description"]
        # the UI shows every safety gate of config/safety_gates.yaml as a blocking check on the evaluation
        from avops.training.gates import load_gate_policy

        checks = {c["name"]: c["blocking"] for c in by_key["training/evaluation"]["assetChecksOrError"]["checks"]}
        gates = {f"gate_{g.slice.name}" for g in load_gate_policy().gates}
        assert gates | {"incident_replay_no_regression"} <= set(checks), checks
        assert all(checks[name] for name in gates), "every gate is a blocking check"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
