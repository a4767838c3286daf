"""Durable rollout state in the model registry's database: one row per rollout, and an append-only event log.

The same database as the registry (SQLite in WAL mode by default, Postgres by ``AVOPS_REGISTRY_URL``),
through the registry's connections and write transactions; triggers keep the event log append-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from avops.home import HomeLayout
from avops.registry import ModelRegistry

STATUSES = ("active", "paused", "rolled_back", "complete")
_COLS = ("rollout_id, cohort, component, target_path, target_sha256, previous_sha256, vehicles, waves, wave, status, "
         "wave_started_at, created_at")


def _schema(dialect: str) -> list[str]:
    ident = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    ddl = [
        """CREATE TABLE IF NOT EXISTS rollouts (
            rollout_id TEXT PRIMARY KEY, cohort TEXT NOT NULL, component TEXT NOT NULL, target_path TEXT NOT NULL,
            target_sha256 TEXT NOT NULL, previous_sha256 TEXT, vehicles TEXT NOT NULL, waves TEXT NOT NULL,
            wave INTEGER NOT NULL, status TEXT NOT NULL, wave_started_at TEXT NOT NULL, created_at TEXT NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS rollout_events (
            id {ident}, rollout_id TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL, wave INTEGER, detail TEXT NOT NULL)""",
    ]
    if dialect == "sqlite":
        ddl += ["""CREATE TRIGGER IF NOT EXISTS rollout_events_no_update BEFORE UPDATE ON rollout_events
                   BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only'); END""",
                """CREATE TRIGGER IF NOT EXISTS rollout_events_no_delete BEFORE DELETE ON rollout_events
                   BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only'); END"""]
    else:
        ddl += ["DROP TRIGGER IF EXISTS rollout_events_append_only ON rollout_events",
                """CREATE TRIGGER rollout_events_append_only BEFORE UPDATE OR DELETE ON rollout_events
                   FOR EACH ROW EXECUTE FUNCTION avops_append_only()"""]
    return ddl


@dataclass
class Rollout:
    rollout_id: str
    cohort: str
    component: str
    target_path: str
    target_sha256: str
    previous_sha256: str | None
    vehicles: list[str]  # the cohort's vehicles in wave order
    waves: list[int]  # cumulative vehicle counts per wave
    wave: int  # index of the current wave
    status: str
    wave_started_at: str
    created_at: str

    def wave_vehicles(self, wave: int | None = None) -> list[str]:
        return self.vehicles[: self.waves[self.wave if wave is None else wave]]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _row(row: tuple) -> Rollout:
    return Rollout(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), json.loads(row[7]), int(row[8]), row[9],
                   row[10], row[11])


class RolloutStore:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        with registry.transaction(schema=True) as conn:
            for stmt in _schema(registry.dialect):
                conn.execute(stmt)

    @classmethod
    def local(cls, home: HomeLayout) -> "RolloutStore":
        return cls(ModelRegistry.local(home))

    def _event(self, conn, rollout_id: str, kind: str, wave: int | None, detail: dict) -> None:
        conn.execute("INSERT INTO rollout_events (rollout_id, at, kind, wave, detail) VALUES (?, ?, ?, ?, ?)",
                     (rollout_id, _now(), kind, wave, json.dumps(detail, sort_keys=True, default=str)))
        if self.registry.audit is not None:  # the transition and its audit entry commit together
            self.registry.audit.append_in(conn, "rollout_transition", rollout_id,
                                          {"transition": kind, "wave": wave, "detail": json.loads(json.dumps(detail, default=str))},
                                          "rollout-controller")

    def create(self, r: Rollout, detail: dict) -> Rollout:
        with self.registry.transaction() as conn:
            if conn.one("SELECT 1 FROM rollouts WHERE rollout_id = ?", (r.rollout_id,)):
                raise ValueError(f"rollout {r.rollout_id} exists")
            conn.execute(f"INSERT INTO rollouts ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (r.rollout_id, r.cohort, r.component, r.target_path, r.target_sha256, r.previous_sha256,
                          json.dumps(r.vehicles), json.dumps(r.waves), r.wave, r.status, r.wave_started_at, r.created_at))
            self._event(conn, r.rollout_id, "created", r.wave, detail)
        return r

    def update(self, rollout_id: str, kind: str, detail: dict, **fields) -> Rollout:
        """Change the rollout's state and record why, in one transaction."""
        bad = set(fields) - {"wave", "status", "wave_started_at"}
        if bad:
            raise ValueError(f"cannot change {sorted(bad)} of a rollout")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown rollout status {fields['status']!r}")
        with self.registry.transaction() as conn:
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(f"UPDATE rollouts SET {sets} WHERE rollout_id = ?", (*fields.values(), rollout_id))
            self._event(conn, rollout_id, kind, fields.get("wave"), detail)
        return self.get(rollout_id)

    def get(self, rollout_id: str) -> Rollout:
        with self.registry.connection() as conn:
            row = conn.one(f"SELECT {_COLS} FROM rollouts WHERE rollout_id = ?", (rollout_id,))
        if row is None:
            raise KeyError(f"no rollout {rollout_id!r}")
        return _row(row)

    def active(self, cohort: str | None = None) -> list[Rollout]:
        sql = f"SELECT {_COLS} FROM rollouts WHERE status = 'active'" + (" AND cohort = ?" if cohort else "") + " ORDER BY created_at"
        with self.registry.connection() as conn:
            return [_row(r) for r in conn.all(sql, (cohort,) if cohort else ())]

    def events(self, rollout_id: str) -> list[dict]:
        with self.registry.connection() as conn:
            rows = conn.all("SELECT id, at, kind, wave, detail FROM rollout_events WHERE rollout_id = ? ORDER BY id", (rollout_id,))
        return [{"id": i, "at": at, "kind": k, "wave": w, "detail": json.loads(d)} for i, at, k, w, d in rows]
