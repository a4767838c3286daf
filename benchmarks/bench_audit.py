"""Benchmark: the audit log at 100k events: append, verify the whole log, produce and check 1,000 inclusion proofs.

Side by side, in the same SQLite file system and process:

* appending 100k events (batches of 1,000, one signed tree head per batch) vs inserting the same
  rows into a plain SQLite table with no hashing or signing (the floor any durable log pays);
* ``AuditLog.verify()`` (every entry re-hashed, positions checked, every signed head re-derived)
  vs hashing every entry once with SHA-256 (the floor of any re-check);
* 1,000 inclusion proofs produced (one pass over the log) and checked offline with
  :func:`avops.audit.log.check_proof` (signature + path).

Prints one summary line last, e.g.

    audit 100000 events: append 21000 events/s, verify 2.9 s, 1000 proofs 0.6 s + check 0.4 s, lineage of a demo package 0.1 s,
    plain-insert 2.1x, sha256-only 3.4x

``plain-insert`` is avops' append time over plain inserts; ``sha256-only`` is verify time over hashing alone.
(The lineage figure appears with ``--home`` pointing at a home where ``make demo`` ran: the verified
lineage of each package, every digest recomputed; target < 2 s.)
Run: ``.venv/bin/python benchmarks/bench_audit.py [--events N] [--proofs P] [--home .avops]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from avops.audit.log import AuditLog, canonical, check_proof
from avops.registry import ModelRegistry

KINDS = ("dataset_commit", "gate_result", "engine_build", "package_signed", "rollout_transition")


def _events(n: int, rng: random.Random):
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        yield kind, f"cohort-{i % 7}", {"sha256": f"{rng.getrandbits(256):064x}", "n": i}, "bench", f"run-{i // 1000}"


def _lineage_seconds(home: str, console) -> float | None:
    """Worst time of ``package_lineage`` (every digest recomputed) over the home's packaged cohorts; target < 2 s."""
    from avops.fleet_registry import load_registry
    from avops.home import HomeLayout
    from avops.lineage import package_lineage
    from avops.versioning.factory import open_repository

    lay = HomeLayout(Path(home).resolve())
    reg = ModelRegistry.local(lay)
    repo = open_repository("embedded", "curated-sets", home=lay)
    worst = None
    for cohort in load_registry().cohort_ids:
        t0 = time.perf_counter()
        try:
            lin = package_lineage(lay, cohort, reg, repo)
        except LookupError:
            continue
        took = time.perf_counter() - t0
        console.print(f"lineage of {cohort}'s package: {len(lin.nodes)} nodes, {len(lin.problems)} problems, {took:.2f} s")
        worst = max(worst or 0.0, took)
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--proofs", type=int, default=1_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--home", default=None, help="An AVOPS_HOME after `make demo`: also time the verified lineage of its packages.")
    args = ap.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        reg = ModelRegistry(f"sqlite:///{Path(tmp) / 'models.db'}", audit_keys=Path(tmp) / "keys")
        log: AuditLog = reg.audit
        rows = list(_events(args.events, random.Random(2026)))

        t0 = time.perf_counter()
        for start in range(0, len(rows), args.batch):
            log.append_many(rows[start:start + args.batch])
        append_s = time.perf_counter() - t0
        console.print(f"appended {len(rows)} events in {append_s:.2f} s")

        plain = sqlite3.connect(Path(tmp) / "plain.db", isolation_level=None)
        plain.execute("PRAGMA journal_mode = WAL")
        plain.execute("CREATE TABLE events (idx INTEGER PRIMARY KEY, at TEXT, kind TEXT, subject TEXT, actor TEXT, entry TEXT)")
        t0 = time.perf_counter()
        for start in range(0, len(rows), args.batch):
            plain.execute("BEGIN IMMEDIATE")
            plain.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                              [(start + i, "t", k, s, a, canonical({"index": start + i, "kind": k, "subject": s, "actor": a,
                                                                    "run_id": r, "data": d}).decode())
                               for i, (k, s, d, a, r) in enumerate(rows[start:start + args.batch])])
            plain.execute("COMMIT")
        plain_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        report = log.verify()
        verify_s = time.perf_counter() - t0
        if not report.ok:
            console.print(f"[red]the benchmark's own log does not verify: {report.problems[:3]}[/]")
            return 1
        t0 = time.perf_counter()
        for e in log.events():
            hashlib.sha256(e.entry.encode()).digest()
        hash_s = time.perf_counter() - t0

        picks = random.Random(7).sample(range(args.events), min(args.proofs, args.events))
        t0 = time.perf_counter()
        bundles = log.prove_many(picks)
        prove_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        failed = sum(bool(check_proof(b)) for b in bundles)
        check_s = time.perf_counter() - t0
        if failed:
            console.print(f"[red]{failed} proofs did not check[/]")
            return 1
    lineage = _lineage_seconds(args.home, console) if args.home else None
    print(f"audit {args.events} events: append {args.events / append_s:.0f} events/s, verify {verify_s:.2f} s, "
          f"{len(picks)} proofs {prove_s:.2f} s + check {check_s:.2f} s, "
          + (f"lineage of a demo package {lineage:.2f} s, " if lineage is not None else "") +
          f"plain-insert {append_s / plain_s:.1f}x, sha256-only {verify_s / hash_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
