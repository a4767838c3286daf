"""The model registry: versions, stages, aliases, and a history that cannot be rewritten."""

import hashlib
import multiprocessing as mp
import sqlite3
import time

import pytest
from click.testing import CliRunner

from avops.audit.log import check_proof
from avops.cli import main
from avops.home import HomeLayout
from avops.registry import ModelRegistry, RegistryError


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


LINEAGE = {"dataset_commit": "abc123", "manifest": sha("manifest"), "code_version": "0.1.0", "run_id": "run-1"}


@pytest.fixture()
def home(tmp_path) -> HomeLayout:
    return HomeLayout(tmp_path / "home")


@pytest.fixture()
def reg(home) -> ModelRegistry:
    return ModelRegistry.local(home)


def released(reg: ModelRegistry, artifact: str, cohort: str = "eu") -> int:
    v = reg.register("perception", cohort, sha(artifact), LINEAGE, {"map": 0.5}, actor="ci").version
    reg.transition("perception", v, "validated", "ci", "eval passed")
    reg.transition("perception", v, "released", "alice", "approved for OTA")
    return v


def test_register_numbers_versions_per_name_and_is_idempotent(reg, home):
    v1 = reg.register("perception", "eu", sha("a"), LINEAGE, {"map": 0.61}, actor="ci", run_id="run-1")
    v2 = reg.register("perception", "us", sha("a"), LINEAGE, {"map": 0.58}, actor="ci")
    p1 = reg.register("planning", "eu", sha("p"), {}, {}, actor="ci")
    again = reg.register("perception", "eu", sha("a"), {"other": 1}, {}, actor="someone-else")
    assert (v1.version, v2.version, p1.version) == (1, 2, 1)
    assert again == v1 and v1.stage == "candidate" and v1.lineage == LINEAGE and v1.metrics == {"map": 0.61}
    assert reg.get("perception", 1) == v1
    assert [v.version for v in reg.list(name="perception")] == [1, 2]
    assert [v.cohort for v in reg.list(cohort="eu")] == ["eu", "eu"]
    assert [e.kind for e in reg.history()] == ["registered"] * 3  # the idempotent call recorded nothing
    assert (home.root / "registry" / "models.db").exists()
    with pytest.raises(RegistryError, match="sha256"):
        reg.register("perception", "eu", "not-a-digest", {}, {}, actor="ci")


def test_missing_versions_and_models_give_clear_errors(reg):
    reg.register("perception", "eu", sha("a"), {}, {}, actor="ci")
    reg.register("perception", "eu", sha("b"), {}, {}, actor="ci")
    with pytest.raises(RegistryError, match=r"'perception' has no version 7 \(it has v1-v2\)"):
        reg.get("perception", 7)
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        reg.transition("nope", 1, "validated", "ci", "why")


def test_transitions_follow_the_allowed_graph(reg):
    v = reg.register("perception", "eu", sha("a"), {}, {}, actor="ci").version
    with pytest.raises(RegistryError, match="from 'candidate' to 'released'"):
        reg.transition("perception", v, "released", "bob", "skip validation")
    assert reg.transition("perception", v, "validated", "ci", "eval passed").stage == "validated"
    assert reg.transition("perception", v, "released", "alice", "approved").stage == "released"
    assert reg.transition("perception", v, "rolled_back", "alice", "regression in rain").stage == "rolled_back"
    assert reg.transition("perception", v, "released", "alice", "fixed upstream").stage == "released"
    b = reg.register("perception", "eu", sha("b"), {}, {}, actor="ci").version
    reg.transition("perception", b, "blocked", "sec", "license issue")
    with pytest.raises(RegistryError, match="'blocked' to 'validated'.*final"):
        reg.transition("perception", b, "validated", "ci", "retry")
    with pytest.raises(RegistryError, match="unknown stage"):
        reg.transition("perception", v, "shipped", "ci", "x")
    with pytest.raises(RegistryError, match="why"):
        reg.transition("perception", b, "blocked", "ci", "")
    stages = [(e.from_value, e.to_value) for e in reg.history(name="perception", version=v) if e.kind == "stage"]
    assert stages == [("candidate", "validated"), ("validated", "released"), ("released", "rolled_back"),
                      ("rolled_back", "released")]
    assert reg.get("perception", v).stage == "released" and reg.get("perception", b).stage == "blocked"


def test_only_a_released_version_can_be_production_and_alias_moves_are_recorded(reg):
    cand = reg.register("perception", "eu", sha("cand"), {}, {}, actor="ci").version
    with pytest.raises(RegistryError, match="only a released version may be 'production'"):
        reg.set_alias("perception", "eu", "production", cand, "alice", "ship it")
    reg.set_alias("perception", "eu", "staging", cand, "ci", "nightly")  # other aliases take any stage
    v1, v2 = released(reg, "r1"), released(reg, "r2")
    us = released(reg, "r-us", cohort="us")
    with pytest.raises(RegistryError, match="cohort 'us', not 'eu'"):
        reg.set_alias("perception", "eu", "production", us, "alice", "wrong cohort")
    reg.set_alias("perception", "eu", "production", v1, "alice", "first release", run_id="run-9")
    reg.set_alias("perception", "eu", "production", v1, "alice", "no-op")  # unchanged: nothing recorded
    reg.set_alias("perception", "eu", "production", v2, "bob", "better in rain")
    assert reg.resolve_alias("perception", "eu", "production").version == v2
    assert reg.resolve_alias("perception", "us", "production") is None
    with pytest.raises(RegistryError, match="move or remove the 'production' alias first"):
        reg.transition("perception", v2, "rolled_back", "bob", "regression")
    reg.set_alias("perception", "eu", "production", v1, "bob", "roll back to v1")
    reg.transition("perception", v2, "rolled_back", "bob", "regression")
    reg.remove_alias("perception", "eu", "production", "carol", "fleet paused")
    with pytest.raises(RegistryError, match="nothing to remove"):
        reg.remove_alias("perception", "eu", "production", "carol", "again")
    assert reg.resolve_alias("perception", "eu", "production") is None
    moves = [(e.kind, e.from_value, e.to_value, e.actor, e.reason, e.run_id)
             for e in reg.history(cohort="eu") if e.alias == "production"]
    assert moves == [
        ("alias_set", None, str(v1), "alice", "first release", "run-9"),
        ("alias_set", str(v1), str(v2), "bob", "better in rain", None),
        ("alias_set", str(v2), str(v1), "bob", "roll back to v1", None),
        ("alias_removed", str(v1), None, "carol", "fleet paused", None),
    ]


def test_history_is_append_only_and_agrees_with_state(reg, home):
    ops = 0
    for i in range(12):
        v = reg.register("perception", ["eu", "us"][i % 2], sha(f"m{i}"), {"i": i}, {}, actor="ci").version
        ops += 1
        for stage in ["validated", "released", "rolled_back", "released"][: i % 5]:
            reg.transition("perception", v, stage, "ci", f"step to {stage}")
            ops += 1
        if reg.get("perception", v).stage == "released":
            reg.set_alias("perception", reg.get("perception", v).cohort, "production", v, "ci", "promote")
            ops += 1
    events = reg.history()
    assert len(events) == ops and [e.id for e in events] == sorted(e.id for e in events)
    # Replaying the history reproduces the current stage of every version and every alias.
    stage, alias = {}, {}
    for e in events:
        if e.kind in ("registered", "stage"):
            stage[e.version] = e.to_value
        elif e.kind == "alias_set":
            alias[(e.cohort, e.alias)] = int(e.to_value)
    assert stage == {v.version: v.stage for v in reg.list()}
    assert alias == {(c, "production"): reg.resolve_alias("perception", c, "production").version for c in ("eu", "us")}

    con = sqlite3.connect(home.root / "registry" / "models.db")
    for sql in ("UPDATE model_history SET reason = 'rewritten'", "DELETE FROM model_history WHERE id = 1",
                "DELETE FROM model_versions", "UPDATE model_versions SET artifact_sha256 = 'x'"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only|cannot be deleted|immutable"):
            con.execute(sql)
    con.execute("UPDATE model_versions SET stage = stage")  # the one mutable column stays writable
    con.rollback()
    assert con.execute("SELECT count(*) FROM model_history").fetchone()[0] == ops
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def _worker(url: str, wid: int, n: int, start, results, audit_keys=None) -> None:
    """One process: register then validate ``n`` models (2 * n operations), racing the other process."""
    reg = ModelRegistry(url, audit_keys=audit_keys)
    start.wait(timeout=30)  # both processes begin writing at the same moment
    mine = []
    for i in range(n):
        v = reg.register("perception", f"c{wid}", sha(f"{wid}-{i}"), {"worker": wid}, {}, actor=f"w{wid}").version
        time.sleep(0.002)  # a real client does work between calls; without gaps SQLite's unfair lock lets one writer run alone
        reg.transition("perception", v, "validated", f"w{wid}", "eval passed", run_id=f"run-{wid}-{i}")
        time.sleep(0.002)
        mine.append(v)
    results.put(mine)


def _race(url: str, n: int, audit_keys=None) -> list[list[int]]:
    """Two spawned processes run ``_worker`` against ``url`` at once; returns the versions each one created."""
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, wid, n, start, results, audit_keys)) for wid in (0, 1)]
    for p in procs:
        p.start()
    mine = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    return mine


def test_two_processes_writing_concurrently_leave_a_consistent_database(tmp_path):
    db = tmp_path / "registry" / "models.db"
    url = f"sqlite:///{db}"
    n = 20  # 2 processes x (20 registrations + 20 transitions) = 80 operations; both also race to create the schema
    mine = _race(url, n, audit_keys=tmp_path / "keys")  # both also race to create the audit log's key
    reg = ModelRegistry(url, audit_keys=tmp_path / "keys")
    report = reg.audit.verify()
    assert report.ok and report.size == report.heads == 4 * n, report.problems
    versions = reg.list()
    assert sorted(v.version for v in versions) == list(range(1, 2 * n + 1))  # none lost, none duplicated
    assert sorted(mine[0] + mine[1]) == list(range(1, 2 * n + 1))
    assert {v.stage for v in versions} == {"validated"}
    assert all(v.lineage["worker"] == int(v.cohort[1]) for v in versions)
    events = reg.history()
    assert len(events) == 4 * n
    assert sorted((e.version, e.kind) for e in events) == sorted((v, k) for v in range(1, 2 * n + 1) for k in ("registered", "stage"))
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_cli_lists_shows_and_prints_history(reg, home):
    v = released(reg, "r1")
    reg.set_alias("perception", "eu", "production", v, "alice", "first release")
    reg.register("planning", "us", sha("p"), {}, {}, actor="ci")
    run = CliRunner()
    out = run.invoke(main, ["registry", "list", "--home", str(home.root)])
    assert out.exit_code == 0, out.output
    assert "perception" in out.output and "planning" in out.output and "production" in out.output
    only = run.invoke(main, ["registry", "list", "--stage", "candidate", "--home", str(home.root)])
    assert only.exit_code == 0 and "planning" in only.output and "perception" not in only.output
    show = run.invoke(main, ["registry", "show", "perception", str(v), "--home", str(home.root)])
    assert show.exit_code == 0 and "dataset_commit" in show.output and "production" in show.output
    hist = run.invoke(main, ["registry", "history", "--name", "perception", "--home", str(home.root)])
    assert hist.exit_code == 0, hist.output
    for token in ("registered", "stage", "alias_set", "alice", "approved"):
        assert token in hist.output, token
    assert "planning" not in hist.output
    missing = run.invoke(main, ["registry", "show", "perception", "9", "--home", str(home.root)])
    assert missing.exit_code != 0 and "has no version 9" in missing.output


def _fresh_db(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name}")
        con.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


def test_postgres_backend_keeps_the_same_contract(postgres_url, tmp_path):
    """Postgres by configuration: the same stages, aliases, append-only history and audit log as SQLite."""
    import psycopg

    reg = ModelRegistry(_fresh_db(postgres_url, "registry_contract"), audit_keys=tmp_path / "keys")
    v = released(reg, "pg1")
    reg.set_alias("perception", "eu", "production", v, "alice", "first release")
    with pytest.raises(RegistryError, match="cannot go from"):
        reg.transition("perception", v, "candidate", "ci", "no way back")
    assert reg.resolve_alias("perception", "eu", "production").version == v
    kinds = [e.kind for e in reg.history("perception", v)]
    assert kinds == ["registered", "stage", "stage", "alias_set"]
    with psycopg.connect(reg.url, autocommit=True) as con:
        for sql in ("UPDATE model_history SET reason = 'rewritten'", "DELETE FROM model_history",
                    "UPDATE model_versions SET artifact_sha256 = 'x'"):
            with pytest.raises(psycopg.Error, match="append-only|cannot be deleted|immutable"):
                con.execute(sql)
        assert con.execute("SELECT count(*) FROM model_history").fetchone()[0] == 4
        for sql in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_heads", "TRUNCATE audit_events"):
            with pytest.raises(psycopg.Error, match="append-only"):
                con.execute(sql)
    report = reg.audit.verify()
    assert report.ok and report.size == 4 and check_proof(reg.audit.prove(3)) == [], report.problems


def test_two_processes_writing_concurrently_to_postgres(postgres_url, tmp_path):
    url = _fresh_db(postgres_url, "registry_race")
    n = 15
    mine = _race(url, n, audit_keys=tmp_path / "keys")
    reg = ModelRegistry(url, audit_keys=tmp_path / "keys")
    report = reg.audit.verify()
    assert report.ok and report.size == report.heads == 4 * n, report.problems
    assert sorted(v.version for v in reg.list()) == list(range(1, 2 * n + 1)) == sorted(mine[0] + mine[1])
    assert len(reg.history()) == 4 * n


def test_opening_the_registry_while_others_write_never_deadlocks_on_postgres(postgres_url, tmp_path):
    """Sensors open the registry every tick (schema DDL, which locks the audit tables too) while run steps
    write (registry tables, then the audit log): both take the registry tables' lock first, so no cycle."""
    import threading

    url = _fresh_db(postgres_url, "registry_open_while_writing")
    ModelRegistry(url, audit_keys=tmp_path / "keys")
    errors: list[BaseException] = []
    stop = threading.Event()

    def opener() -> None:
        try:
            while not stop.is_set():
                ModelRegistry(url, audit_keys=tmp_path / "keys")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def writer() -> None:
        try:
            reg = ModelRegistry(url, audit_keys=tmp_path / "keys")
            for i in range(25):
                v = reg.register("m", "c", f"{i:064x}", {}, {}, "test", "race")
                reg.transition("m", v.version, "validated", "test", "race")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=opener), threading.Thread(target=opener), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:1]
    assert ModelRegistry(url, audit_keys=tmp_path / "keys").audit.verify().ok
