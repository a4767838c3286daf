"""Durable rollout state: one row per rollout, and an append-only log of every transition.

SQLite in WAL mode next to the model registry (``registry/rollouts.db``); the events table
cannot be updated or deleted (triggers), so the history of every wave is kept.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from avops.home import HomeLayout

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS rollouts (
        rollout_id TEXT PRIMARY KEY, cohort TEXT NOT NULL, component TEXT NOT NULL, target_path TEXT NOT NULL,
        target_sha256 TEXT NOT NULL, previous_sha256 TEXT, vehicles TEXT NOT NULL, waves TEXT NOT NULL,
        wave INTEGER NOT NULL, status TEXT NOT NULL, wave_started_at TEXT NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rollout_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL,
        wave INTEGER, detail TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS rollout_events_no_update BEFORE UPDATE ON rollout_events
       BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS rollout_events_no_delete BEFORE DELETE ON rollout_events
       BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only'); END""",
]
STATUSES = ("active", "paused", "rolled_back", "complete")


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


class RolloutStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            con.execute("PRAGMA journal_mode = WAL")  # a property of the file; not allowed inside a transaction
        finally:
            con.close()
        with self._tx() as con:
            for stmt in SCHEMA:
                con.execute(stmt)

    @classmethod
    def local(cls, home: HomeLayout) -> "RolloutStore":
        return cls(home.root / "registry" / "rollouts.db")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def create(self, r: Rollout, detail: dict) -> Rollout:
        with self._tx() as con:
            if con.execute("SELECT 1 FROM rollouts WHERE rollout_id = ?", (r.rollout_id,)).fetchone():
                raise ValueError(f"rollout {r.rollout_id} exists")
            con.execute("INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (r.rollout_id, r.cohort, r.component, r.target_path, r.target_sha256, r.previous_sha256, json.dumps(r.vehicles),
                         json.dumps(r.waves), r.wave, r.status, r.wave_started_at, r.created_at))
            self._event(con, r.rollout_id, "created", r.wave, detail)
        return r

    def _event(self, con, rollout_id: str, kind: str, wave: int | None, detail: dict) -> None:
        con.execute("INSERT INTO rollout_events (rollout_id, at, kind, wave, detail) VALUES (?,?,?,?,?)",
                    (rollout_id, _now(), kind, wave, json.dumps(detail, sort_keys=True, default=str)))

    def update(self, rollout_id: str, kind: str, detail: dict, **fields) -> Rollout:
        """Change the rollout's state and record why, in one transaction."""
        with self._tx() as con:
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                con.execute(f"UPDATE rollouts SET {sets} WHERE rollout_id = ?", (*fields.values(), rollout_id))
            self._event(con, rollout_id, kind, fields.get("wave"), detail)
        return self.get(rollout_id)

    def get(self, rollout_id: str) -> Rollout:
        con = sqlite3.connect(self.path)
        try:
            row = con.execute("SELECT * FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone()
        finally:
            con.close()
        if row is None:
            raise KeyError(f"no rollout {rollout_id!r}")
        return Rollout(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), json.loads(row[7]), row[8], row[9], row[10], row[11])

    def active(self, cohort: str | None = None) -> list[Rollout]:
        con = sqlite3.connect(self.path)
        try:
            ids = [r[0] for r in con.execute("SELECT rollout_id FROM rollouts WHERE status = 'active'" +
                                             (" AND cohort = ?" if cohort else "") + " ORDER BY created_at", (cohort,) if cohort else ())]
        finally:
            con.close()
        return [self.get(i) for i in ids]

    def events(self, rollout_id: str) -> list[dict]:
        con = sqlite3.connect(self.path)
        try:
            rows = con.execute("SELECT id, at, kind, wave, detail FROM rollout_events WHERE rollout_id = ? ORDER BY id", (rollout_id,)).fetchall()
        finally:
            con.close()
        return [{"id": i, "at": at, "kind": k, "wave": w, "detail": json.loads(d)} for i, at, k, w, d in rows]
