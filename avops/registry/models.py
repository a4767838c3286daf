"""The model registry: versions with lineage, stages, aliases and their full history.

Registries that keep only the *current* stage and alias lose the answer to "what was in
production for this cohort last Tuesday, who put it there, and why". Here every change
appends a row to ``model_history`` in the same transaction that changes the current
state, so the two can never disagree, and triggers make that table append-only.

SQLite (in ``AVOPS_HOME``) is the default backend; a ``postgresql://`` URL uses psycopg
with the same SQL. Each call opens its own connection: connections are never shared
across threads or processes, and SQLite's WAL mode plus ``BEGIN IMMEDIATE`` serialize
concurrent writers (other processes wait up to ``BUSY_TIMEOUT_MS``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from avops.home import HomeLayout

STAGES = ("candidate", "validated", "released", "rolled_back", "blocked")
ALLOWED: dict[str, set[str]] = {
    "candidate": {"validated", "blocked"},
    "validated": {"released", "blocked"},
    "released": {"rolled_back"},
    "rolled_back": {"released"},
    "blocked": set(),
}
# Aliases that may only point at versions in these stages (checked on set_alias AND on transition).
ALIAS_STAGES: dict[str, set[str]] = {"production": {"released"}}
EVENT_KINDS = ("registered", "stage", "alias_set", "alias_removed")
BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 1
_PG_SCHEMA_LOCK = 0x61766F7073  # "avops": serializes schema creation across processes

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION_COLS = "name, version, cohort, artifact_sha256, stage, lineage, metrics, created_at, created_by"
_HISTORY_COLS = "id, at, actor, kind, name, version, cohort, alias, from_value, to_value, reason, run_id"


@dataclass(frozen=True)
class ModelVersion:
    """One registered checkpoint of a model for one cohort; only ``stage`` ever changes."""

    name: str
    version: int
    cohort: str
    artifact_sha256: str
    stage: str
    lineage: dict
    metrics: dict
    created_at: str
    created_by: str


@dataclass(frozen=True)
class HistoryEvent:
    """One append-only record of a change: who did what, when, why, and from which run."""

    id: int
    at: str
    actor: str
    kind: str
    name: str
    version: int | None
    cohort: str | None
    alias: str | None
    from_value: str | None
    to_value: str | None
    reason: str
    run_id: str | None


class RegistryError(ValueError):
    """A request the registry refuses; the message says what is wrong and what to do."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _schema(dialect: str) -> list[str]:
    """DDL, portable except for the history id column and the append-only guards."""
    hist_id = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    ddl = [
        """CREATE TABLE IF NOT EXISTS model_versions (
            name TEXT NOT NULL, version INTEGER NOT NULL, cohort TEXT NOT NULL, artifact_sha256 TEXT NOT NULL,
            stage TEXT NOT NULL, lineage TEXT NOT NULL, metrics TEXT NOT NULL,
            created_at TEXT NOT NULL, created_by TEXT NOT NULL,
            PRIMARY KEY (name, version), UNIQUE (name, cohort, artifact_sha256))""",
        """CREATE TABLE IF NOT EXISTS model_aliases (
            name TEXT NOT NULL, cohort TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
            updated_at TEXT NOT NULL, updated_by TEXT NOT NULL,
            PRIMARY KEY (name, cohort, alias), FOREIGN KEY (name, version) REFERENCES model_versions (name, version))""",
        f"""CREATE TABLE IF NOT EXISTS model_history (
            id {hist_id}, at TEXT NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL,
            name TEXT NOT NULL, version INTEGER, cohort TEXT, alias TEXT,
            from_value TEXT, to_value TEXT, reason TEXT NOT NULL, run_id TEXT)""",
        "CREATE INDEX IF NOT EXISTS model_history_by_name ON model_history (name, version)",
    ]
    if dialect == "sqlite":
        ddl += [
            """CREATE TRIGGER IF NOT EXISTS model_history_no_update BEFORE UPDATE ON model_history
               BEGIN SELECT RAISE(ABORT, 'model_history is append-only: rows cannot be updated'); END""",
            """CREATE TRIGGER IF NOT EXISTS model_history_no_delete BEFORE DELETE ON model_history
               BEGIN SELECT RAISE(ABORT, 'model_history is append-only: rows cannot be deleted'); END""",
            """CREATE TRIGGER IF NOT EXISTS model_versions_no_delete BEFORE DELETE ON model_versions
               BEGIN SELECT RAISE(ABORT, 'model versions cannot be deleted: block them instead'); END""",
            """CREATE TRIGGER IF NOT EXISTS model_versions_immutable
               BEFORE UPDATE OF name, version, cohort, artifact_sha256, lineage, metrics, created_at, created_by
               ON model_versions
               BEGIN SELECT RAISE(ABORT, 'model versions are immutable except for their stage'); END""",
        ]
    else:
        ddl += [
            """CREATE OR REPLACE FUNCTION avops_append_only() RETURNS trigger AS $$
               BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$ LANGUAGE plpgsql""",
            "DROP TRIGGER IF EXISTS model_history_append_only ON model_history",
            """CREATE TRIGGER model_history_append_only BEFORE UPDATE OR DELETE ON model_history
               FOR EACH ROW EXECUTE FUNCTION avops_append_only()""",
            "DROP TRIGGER IF EXISTS model_history_no_truncate ON model_history",
            """CREATE TRIGGER model_history_no_truncate BEFORE TRUNCATE ON model_history
               FOR EACH STATEMENT EXECUTE FUNCTION avops_append_only()""",
            """CREATE OR REPLACE FUNCTION avops_versions_guard() RETURNS trigger AS $$
               BEGIN
                 IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'model versions cannot be deleted: block them instead'; END IF;
                 IF (NEW.name, NEW.version, NEW.cohort, NEW.artifact_sha256, NEW.lineage, NEW.metrics, NEW.created_at, NEW.created_by)
                    IS DISTINCT FROM (OLD.name, OLD.version, OLD.cohort, OLD.artifact_sha256, OLD.lineage, OLD.metrics, OLD.created_at, OLD.created_by)
                 THEN RAISE EXCEPTION 'model versions are immutable except for their stage'; END IF;
                 RETURN NEW;
               END $$ LANGUAGE plpgsql""",
            "DROP TRIGGER IF EXISTS model_versions_guard ON model_versions",
            """CREATE TRIGGER model_versions_guard BEFORE UPDATE OR DELETE ON model_versions
               FOR EACH ROW EXECUTE FUNCTION avops_versions_guard()""",
            "DROP TRIGGER IF EXISTS model_versions_no_truncate ON model_versions",
            """CREATE TRIGGER model_versions_no_truncate BEFORE TRUNCATE ON model_versions
               FOR EACH STATEMENT EXECUTE FUNCTION avops_append_only()""",
        ]
    return ddl


class _Conn:
    """A thin wrapper so the same ``?``-style SQL runs on sqlite3 and psycopg."""

    def __init__(self, raw: Any, dialect: str):
        self.raw, self.dialect = raw, dialect

    def execute(self, sql: str, params: tuple = ()) -> Any:
        if self.dialect == "postgres":  # psycopg: %s placeholders, and None (not ()) so DDL's % is literal
            return self.raw.execute(sql.replace("?", "%s"), params or None)
        return self.raw.execute(sql, params)

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return list(self.execute(sql, params).fetchall())

    def one(self, sql: str, params: tuple = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()


class ModelRegistry:
    """Model versions, stages and aliases, with an append-only history of every change."""

    def __init__(self, url: str, audit_keys: Path | None = None):
        """``audit_keys``: the folder of the audit log's signing key; every change is then also logged
        in the tamper-evident audit log (same database, same transaction)."""
        self.url = url
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            path = url[len("sqlite:///"):]
            if not path or path == ":memory:":
                raise RegistryError(f"{url!r}: an in-memory registry would not be shared between calls; give a file path, "
                                    "e.g. sqlite:////abs/path/models.db")
            self.path: Path | None = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect, self.path = "postgres", None
            try:
                import psycopg  # noqa: F401
            except ImportError as exc:
                raise RegistryError(f"registry URL {self._safe_url()} needs psycopg, which is not installed: "
                                    "run `pip install 'psycopg[binary]'` or use a sqlite:/// URL") from exc
        else:
            raise RegistryError(f"unsupported registry URL {url!r}: use sqlite:///path/to/models.db or postgresql://...")
        self._init_schema(audited=audit_keys is not None)
        self.audit = None
        if audit_keys is not None:
            from avops.audit.log import AuditLog
            from avops.ota.keys import KeyRing

            self.audit = AuditLog(self, KeyRing(Path(audit_keys)), create_schema=False)

    @classmethod
    def local(cls, home: HomeLayout) -> "ModelRegistry":
        """The embedded default: SQLite at ``<home>/registry/models.db``, audited, the log key under ``<home>/audit/keys``."""
        return cls(f"sqlite:///{(home.root / 'registry' / 'models.db').resolve()}", audit_keys=home.root / "audit" / "keys")

    def _safe_url(self) -> str:
        return re.sub(r"//[^@/]*@", "//***@", self.url)  # never echo a password

    def __repr__(self) -> str:
        return f"ModelRegistry({self._safe_url()!r})"

    # -- connections and transactions ---------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[_Conn]:
        """A fresh connection per call, so nothing is shared across threads or processes."""
        if self.dialect == "sqlite":
            raw = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                raw.execute("PRAGMA foreign_keys = ON")  # WAL is a property of the file, set once in _init_schema
                yield _Conn(raw, "sqlite")
            finally:
                raw.close()
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as raw:
                yield _Conn(raw, "postgres")

    @contextmanager
    def _transaction(self, schema: bool = False) -> Iterator[_Conn]:
        """One write transaction that takes the writer lock up front (no lost updates, no upgrade deadlocks).

        On Postgres, creating the schema serializes on an advisory lock (the tables may not exist yet).
        """
        with self._connect() as conn:
            if self.dialect == "sqlite":
                conn.execute("BEGIN IMMEDIATE")
            else:
                conn.execute("BEGIN")
                if schema:
                    conn.execute(f"SELECT pg_advisory_xact_lock({_PG_SCHEMA_LOCK})")
                    if conn.one("SELECT to_regclass('model_history')")[0] is not None:
                        # the tables exist: take the writers' lock first, so that this transaction's DDL (which locks
                        # the audit tables too) orders its locks as every writer does; otherwise a writer holding the
                        # registry tables and waiting for the audit tables deadlocks with it
                        conn.execute("LOCK TABLE model_versions, model_aliases, model_history IN SHARE ROW EXCLUSIVE MODE")
                else:
                    conn.execute("LOCK TABLE model_versions, model_aliases, model_history IN SHARE ROW EXCLUSIVE MODE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def transaction(self, schema: bool = False):
        """A write transaction on the registry's database, for state kept beside it (e.g. rollouts)."""
        return self._transaction(schema)

    def connection(self):
        """A read connection on the registry's database (``?`` placeholders on every backend)."""
        return self._connect()

    def _init_schema(self, audited: bool = False) -> None:
        """Registry tables (and the audit log's, when audited) in one schema transaction per open."""
        if self.dialect == "sqlite":
            self._enable_wal()
        statements = _schema(self.dialect)
        if audited:
            from avops.audit.log import schema as audit_schema

            statements += audit_schema(self.dialect)
        with self._transaction(schema=True) as conn:
            for stmt in statements:
                conn.execute(stmt)
            if self.dialect == "sqlite":
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _enable_wal(self) -> None:
        """Switch the file to WAL, retrying: on a fresh file racing another process, SQLite answers
        "database is locked" at once instead of waiting for the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        with self._connect() as conn:
            while True:
                try:
                    mode = conn.one("PRAGMA journal_mode = WAL")[0]
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise RegistryError(f"cannot open the registry {self.path}: {exc}; "
                                            "another process holds it locked, retry when it is done") from exc
                    time.sleep(0.01)
        if mode.lower() != "wal":
            raise RegistryError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); "
                                "put the registry on a local file system, not a network share")

    def _append(self, conn: _Conn, actor: str, kind: str, name: str, version: int | None, cohort: str | None,
                alias: str | None, from_value: str | None, to_value: str | None, reason: str, run_id: str | None) -> None:
        conn.execute(
            "INSERT INTO model_history (at, actor, kind, name, version, cohort, alias, from_value, to_value, reason, run_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), actor, kind, name, version, cohort, alias, from_value, to_value, reason, run_id),
        )
        if self.audit is not None:
            subject = f"{name}/v{version}" if version is not None else name
            self.audit.append_in(conn, "registry", subject, {"event": kind, "model": name, "version": version, "cohort": cohort,
                                                             "alias": alias, "from": from_value, "to": to_value, "reason": reason},
                                 actor, run_id)

    # -- mutations -------------------------------------------------------------------------

    def register(self, name: str, cohort: str, artifact_sha256: str, lineage: dict, metrics: dict, actor: str,
                 reason: str = "", run_id: str | None = None) -> ModelVersion:
        """Add a ``candidate`` version; registering the same (name, cohort, artifact) again returns the existing one."""
        _require(name=name, cohort=cohort, actor=actor)
        if not _SHA256.match(artifact_sha256 or ""):
            raise RegistryError(f"artifact_sha256 {artifact_sha256!r} is not a lowercase sha256 hex digest: "
                                "pass the object-store digest of the checkpoint")
        lineage_json, metrics_json = _to_json("lineage", lineage), _to_json("metrics", metrics)
        with self._transaction() as conn:
            row = conn.one(f"SELECT {_VERSION_COLS} FROM model_versions WHERE name = ? AND cohort = ? AND artifact_sha256 = ?",
                           (name, cohort, artifact_sha256))
            if row is not None:
                return _version(row)
            (version,) = conn.one("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?", (name,))
            now = _now()
            conn.execute(f"INSERT INTO model_versions ({_VERSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (name, version, cohort, artifact_sha256, "candidate", lineage_json, metrics_json, now, actor))
            self._append(conn, actor, "registered", name, version, cohort, None, None, "candidate", reason, run_id)
            return _version(conn.one(f"SELECT {_VERSION_COLS} FROM model_versions WHERE name = ? AND version = ?",
                                     (name, version)))

    def transition(self, name: str, version: int, to_stage: str, actor: str, reason: str,
                   run_id: str | None = None) -> ModelVersion:
        """Move a version to another stage, as ``ALLOWED`` permits."""
        _require(actor=actor, reason=reason)
        if to_stage not in STAGES:
            raise RegistryError(f"unknown stage {to_stage!r}: use one of {', '.join(STAGES)}")
        with self._transaction() as conn:
            current = self._get(conn, name, version)
            if to_stage not in ALLOWED[current.stage]:
                allowed = ", ".join(sorted(ALLOWED[current.stage])) or "none (it is final)"
                raise RegistryError(f"{name} v{version} cannot go from {current.stage!r} to {to_stage!r}; "
                                    f"allowed from {current.stage!r}: {allowed}")
            for (alias,) in conn.all("SELECT alias FROM model_aliases WHERE name = ? AND version = ? ORDER BY alias",
                                     (name, version)):
                if alias in ALIAS_STAGES and to_stage not in ALIAS_STAGES[alias]:
                    raise RegistryError(f"{name} v{version} is {alias!r} for cohort {current.cohort}, which must stay "
                                        f"{'/'.join(sorted(ALIAS_STAGES[alias]))}: move or remove the {alias!r} alias first")
            conn.execute("UPDATE model_versions SET stage = ? WHERE name = ? AND version = ?", (to_stage, name, version))
            self._append(conn, actor, "stage", name, version, current.cohort, None, current.stage, to_stage, reason, run_id)
            return _replace_stage(current, to_stage)

    def set_alias(self, name: str, cohort: str, alias: str, version: int, actor: str, reason: str,
                  run_id: str | None = None) -> None:
        """Point ``alias`` (per name and cohort) at a version; pointing it where it already points records nothing."""
        _require(alias=alias, actor=actor, reason=reason)
        with self._transaction() as conn:
            target = self._get(conn, name, version)
            if target.cohort != cohort:
                raise RegistryError(f"{name} v{version} was registered for cohort {target.cohort!r}, not {cohort!r}: "
                                    f"an alias of {cohort!r} must point at one of its own versions")
            if alias in ALIAS_STAGES and target.stage not in ALIAS_STAGES[alias]:
                raise RegistryError(f"only a {'/'.join(sorted(ALIAS_STAGES[alias]))} version may be {alias!r}; "
                                    f"{name} v{version} is {target.stage!r}: transition it first")
            row = conn.one("SELECT version FROM model_aliases WHERE name = ? AND cohort = ? AND alias = ?", (name, cohort, alias))
            if row is not None and row[0] == version:
                return
            now = _now()
            if row is None:
                conn.execute("INSERT INTO model_aliases (name, cohort, alias, version, updated_at, updated_by)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (name, cohort, alias, version, now, actor))
            else:
                conn.execute("UPDATE model_aliases SET version = ?, updated_at = ?, updated_by = ?"
                             " WHERE name = ? AND cohort = ? AND alias = ?", (version, now, actor, name, cohort, alias))
            self._append(conn, actor, "alias_set", name, version, cohort, alias,
                         None if row is None else str(row[0]), str(version), reason, run_id)

    def remove_alias(self, name: str, cohort: str, alias: str, actor: str, reason: str, run_id: str | None = None) -> None:
        """Delete an alias; the history keeps which version it pointed at."""
        _require(alias=alias, actor=actor, reason=reason)
        with self._transaction() as conn:
            row = conn.one("SELECT version FROM model_aliases WHERE name = ? AND cohort = ? AND alias = ?", (name, cohort, alias))
            if row is None:
                raise RegistryError(f"{name} has no alias {alias!r} for cohort {cohort!r}; nothing to remove")
            conn.execute("DELETE FROM model_aliases WHERE name = ? AND cohort = ? AND alias = ?", (name, cohort, alias))
            self._append(conn, actor, "alias_removed", name, row[0], cohort, alias, str(row[0]), None, reason, run_id)

    # -- queries ---------------------------------------------------------------------------

    def _get(self, conn: _Conn, name: str, version: int) -> ModelVersion:
        row = conn.one(f"SELECT {_VERSION_COLS} FROM model_versions WHERE name = ? AND version = ?", (name, version))
        if row is not None:
            return _version(row)
        versions = [v for (v,) in conn.all("SELECT version FROM model_versions WHERE name = ? ORDER BY version", (name,))]
        if not versions:
            raise RegistryError(f"no model named {name!r} is registered; `avops registry list` shows the models")
        raise RegistryError(f"model {name!r} has no version {version} (it has {_ranges(versions)}); "
                            f"`avops registry list --name {name}` shows them")

    def get(self, name: str, version: int) -> ModelVersion:
        with self._connect() as conn:
            return self._get(conn, name, version)

    def resolve_alias(self, name: str, cohort: str, alias: str) -> ModelVersion | None:
        with self._connect() as conn:
            row = conn.one(f"SELECT {', '.join('v.' + c.strip() for c in _VERSION_COLS.split(','))}"
                           " FROM model_aliases a JOIN model_versions v ON v.name = a.name AND v.version = a.version"
                           " WHERE a.name = ? AND a.cohort = ? AND a.alias = ?", (name, cohort, alias))
        return None if row is None else _version(row)

    def aliases(self, name: str, version: int) -> list[str]:
        """The aliases currently pointing at one version (within its cohort)."""
        with self._connect() as conn:
            return [a for (a,) in conn.all("SELECT alias FROM model_aliases WHERE name = ? AND version = ? ORDER BY alias",
                                           (name, version))]

    def list(self, name: str | None = None, cohort: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        if stage is not None and stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
        where, params = _where(name=name, cohort=cohort, stage=stage)
        with self._connect() as conn:
            rows = conn.all(f"SELECT {_VERSION_COLS} FROM model_versions{where} ORDER BY name, version", params)
        return [_version(r) for r in rows]

    def history(self, name: str | None = None, version: int | None = None, cohort: str | None = None) -> list[HistoryEvent]:
        """Every recorded change, oldest first."""
        where, params = _where(name=name, version=version, cohort=cohort)
        with self._connect() as conn:
            rows = conn.all(f"SELECT {_HISTORY_COLS} FROM model_history{where} ORDER BY id", params)
        return [HistoryEvent(*r) for r in rows]


def _require(**fields: str) -> None:
    for key, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            hint = " (the history must say why)" if key == "reason" else ""
            raise RegistryError(f"{key} must be a non-empty string{hint}, got {value!r}")


def _to_json(label: str, value: dict) -> str:
    if not isinstance(value, dict):
        raise RegistryError(f"{label} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{label} must be JSON-serializable: {exc}") from exc


def _version(row: tuple) -> ModelVersion:
    name, version, cohort, sha, stage, lineage, metrics, created_at, created_by = row
    return ModelVersion(name, int(version), cohort, sha, stage, json.loads(lineage), json.loads(metrics), created_at, created_by)


def _replace_stage(v: ModelVersion, stage: str) -> ModelVersion:
    return replace(v, stage=stage)


def _where(**filters: Any) -> tuple[str, tuple]:
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), tuple(used.values())


def _ranges(versions: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"v1-v3, v5"``: short enough for an error message."""
    out, start = [], versions[0]
    for prev, cur in zip(versions, versions[1:] + [None]):
        if cur is None or cur != prev + 1:
            out.append(f"v{start}" if start == prev else f"v{start}-v{prev}")
            start = cur
    return ", ".join(out)
