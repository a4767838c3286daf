"""The audit log: an append-only, tamper-evident record of every event that matters, in the registry's database.

Each event is a canonical JSON entry (index, time, kind, subject, actor, run id, data); its RFC 6962
leaf hash joins a Merkle tree, and every append signs a new tree head (size, root, time) with the
log's key. The head row also keeps the tree's compact range (the roots of its perfect subtrees),
so the next append computes the new root in O(log n) without reading the log.

What that buys an auditor:

* ``verify`` recomputes every leaf from its entry and every signed head from the leaves: an edited,
  dropped or reordered entry, or a head re-signed over other content, is named precisely;
* ``prove(index)`` gives an inclusion proof that can be checked offline (:func:`check_proof`)
  against a published, signed tree head, with nothing but this module;
* ``consistency(old, new)`` proves that a head an auditor kept is a prefix of today's log.

The signer is a securesystemslib signer from :class:`~avops.ota.keys.KeyRing` (a 0600 file by
default, a KMS or HSM by URI in production), so the key that signs heads never needs to live with
the database.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from securesystemslib.signer import Key, Signature

from avops.audit import merkle
from avops.ota.keys import KeyRing

LOG_ROLE = "audit/log"
PROOF_FORMAT = "avops-audit-proof/1"

# event kinds written by the pipeline (free text is allowed; these are the ones the dossier reads)
DATASET_COMMIT = "dataset_commit"
GATE_RESULT = "gate_result"
REGISTRY = "registry"  # stage and alias changes (written by the model registry itself)
ENGINE_BUILD = "engine_build"
PACKAGE_SIGNED = "package_signed"
ROLLOUT = "rollout_transition"
ROLLBACK = "rollback"
DOSSIER = "dossier"


class AuditError(RuntimeError):
    pass


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def schema(dialect: str) -> list[str]:
    ddl = [
        """CREATE TABLE IF NOT EXISTS audit_events (
            idx BIGINT PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
            actor TEXT NOT NULL, entry TEXT NOT NULL, leaf_hash TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS audit_events_by_subject ON audit_events (kind, subject)",
        """CREATE TABLE IF NOT EXISTS audit_heads (
            tree_size BIGINT PRIMARY KEY, root_hash TEXT NOT NULL, at TEXT NOT NULL, frontier TEXT NOT NULL,
            keyid TEXT NOT NULL, signature TEXT NOT NULL)""",
    ]
    if dialect == "sqlite":
        for table in ("audit_events", "audit_heads"):
            ddl += [f"""CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
                        BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be updated'); END""",
                    f"""CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
                        BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be deleted'); END"""]
    else:
        ddl.append("""CREATE OR REPLACE FUNCTION avops_append_only() RETURNS trigger AS $$
               BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$ LANGUAGE plpgsql""")
        for table in ("audit_events", "audit_heads"):
            ddl += [f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
                    f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                        FOR EACH ROW EXECUTE FUNCTION avops_append_only()""",
                    f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
                    f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                        FOR EACH STATEMENT EXECUTE FUNCTION avops_append_only()"""]
    return ddl


# -- compact range: the perfect-subtree roots of a tree, enough to extend it and compute its root --------


def _push(frontier: list[tuple[int, bytes]], leaf: bytes) -> None:
    frontier.append((0, leaf))
    while len(frontier) > 1 and frontier[-1][0] == frontier[-2][0]:
        (h, right), (_, left) = frontier.pop(), frontier.pop()
        frontier.append((h + 1, merkle.node_hash(left, right)))


def _root(frontier: list[tuple[int, bytes]]) -> bytes:
    if not frontier:
        return merkle.EMPTY_ROOT
    r = frontier[-1][1]
    for _, h in reversed(frontier[:-1]):
        r = merkle.node_hash(h, r)
    return r


@dataclass(frozen=True)
class TreeHead:
    log_id: str
    tree_size: int
    root_hash: str
    timestamp: str
    keyid: str
    signature: str

    def payload(self) -> bytes:
        """What the log key signs: the head without its signature."""
        return canonical({"log_id": self.log_id, "tree_size": self.tree_size, "root_hash": self.root_hash,
                          "timestamp": self.timestamp})

    def to_dict(self) -> dict:
        return {"log_id": self.log_id, "tree_size": self.tree_size, "root_hash": self.root_hash, "timestamp": self.timestamp,
                "keyid": self.keyid, "signature": self.signature}

    @classmethod
    def from_dict(cls, d: dict) -> "TreeHead":
        return cls(str(d["log_id"]), int(d["tree_size"]), str(d["root_hash"]), str(d["timestamp"]), str(d["keyid"]),
                   str(d["signature"]))

    def verify(self, keys: dict[str, Key]) -> str | None:
        """None when a trusted key signed exactly this head, else why not."""
        key = keys.get(self.keyid)
        if key is None:
            return f"tree head of size {self.tree_size} is signed by key {self.keyid[:12]}, which is not a trusted log key"
        try:
            key.verify_signature(Signature(self.keyid, self.signature), self.payload())
        except Exception:  # noqa: BLE001 - securesystemslib raises several types for a bad signature
            return f"tree head of size {self.tree_size} (signed {self.timestamp}): signature does not verify"
        return None


@dataclass(frozen=True)
class Receipt:
    """What an append returns: where the event sits and the head that now covers it."""
    index: int
    leaf_hash: str
    head: TreeHead | None  # None inside a batch: only its last event gets a signed head


@dataclass
class Event:
    index: int
    at: str
    kind: str
    subject: str
    actor: str
    entry: str
    leaf_hash: str

    @property
    def body(self) -> dict:
        return json.loads(self.entry)


@dataclass
class VerifyReport:
    size: int = 0
    heads: int = 0
    root_hash: str = merkle.EMPTY_ROOT.hex()
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    """The audit log kept in ``db`` (a :class:`~avops.registry.ModelRegistry`: SQLite or Postgres), heads signed by ``keys``."""

    def __init__(self, db, keys: KeyRing, log_id: str = "avops-audit", create_schema: bool = True) -> None:
        """``create_schema=False`` when the caller already ran :func:`schema` (the registry does, in its own schema transaction)."""
        self.db, self.keys, self.log_id = db, keys, log_id
        if create_schema:
            with db.transaction(schema=True) as conn:
                for stmt in schema(db.dialect):
                    conn.execute(stmt)

    @classmethod
    def local(cls, home) -> "AuditLog":
        """The embedded default: the log in the home's registry database, its key under ``<home>/audit/keys``."""
        from avops.registry import ModelRegistry

        return ModelRegistry.local(home).audit

    # -- keys --------------------------------------------------------------------------------

    def _signer(self):
        signers = self.keys.signers(LOG_ROLE)
        if signers:
            return signers[0]
        self.keys.root.mkdir(parents=True, exist_ok=True)
        with open(self.keys.root / ".audit-key.lock", "w") as lock:  # parallel steps must not each create a key
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.keys.signers(LOG_ROLE):
                self.keys.generate(LOG_ROLE, 1)
        return self.keys.signers(LOG_ROLE)[0]

    def public_keys(self) -> dict[str, Key]:
        """Every key that has ever signed heads (a rotated key still vouches for the heads it signed)."""
        self._signer()
        keys = self.keys.public_keys(LOG_ROLE)
        try:
            keys += self.keys.public_keys(f"{LOG_ROLE}@retired")
        except LookupError:
            pass
        return {k.keyid: k for k in keys}

    # -- writing -----------------------------------------------------------------------------

    def append(self, kind: str, subject: str, data: dict, actor: str, run_id: str | None = None) -> Receipt:
        """Log one event in its own transaction and sign the new tree head."""
        with self.db.transaction() as conn:
            return self.append_in(conn, kind, subject, data, actor, run_id)

    def append_in(self, conn, kind: str, subject: str, data: dict, actor: str, run_id: str | None = None) -> Receipt:
        """Log one event inside the caller's write transaction (the registry logs its changes atomically this way)."""
        return self._append_all(conn, [(kind, subject, data, actor, run_id)])[-1]

    def append_many(self, events: Iterable[tuple[str, str, dict, str, str | None]]) -> Receipt:
        """Log a batch in one transaction with one signed head at the end (imports, benchmarks)."""
        with self.db.transaction() as conn:
            return self._append_all(conn, list(events), sign_each=False)[-1]

    def _append_all(self, conn, events: list, sign_each: bool = True) -> list[Receipt]:
        if self.db.dialect == "postgres":
            conn.execute("LOCK TABLE audit_events, audit_heads IN SHARE ROW EXCLUSIVE MODE")
        last = conn.one("SELECT tree_size, frontier FROM audit_heads ORDER BY tree_size DESC LIMIT 1")
        size = int(last[0]) if last else 0
        top = conn.one("SELECT MAX(idx) FROM audit_events")[0]
        logged = 0 if top is None else int(top) + 1
        if logged != size:
            raise AuditError(f"the audit log holds {logged} events but its latest signed head covers {size}: "
                             "run `avops audit verify` before writing more")
        frontier = [(int(h), bytes.fromhex(x)) for h, x in json.loads(last[1])] if last else []
        signer, receipts = self._signer(), []
        for i, (kind, subject, data, actor, run_id) in enumerate(events):
            at = _now()
            entry = canonical({"index": size, "at": at, "kind": kind, "subject": subject, "actor": actor,
                               "run_id": run_id, "data": data})
            leaf = merkle.leaf_hash(entry)
            conn.execute("INSERT INTO audit_events (idx, at, kind, subject, actor, entry, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (size, at, kind, subject, actor, entry.decode(), leaf.hex()))
            _push(frontier, leaf)
            size += 1
            if sign_each or i == len(events) - 1:
                head = self._sign(conn, signer, size, frontier, at)
            receipts.append(Receipt(size - 1, leaf.hex(), head if sign_each or i == len(events) - 1 else None))
        return receipts

    def _sign(self, conn, signer, size: int, frontier: list, at: str) -> TreeHead:
        unsigned = TreeHead(self.log_id, size, _root(frontier).hex(), at, signer.public_key.keyid, "")
        sig = signer.sign(unsigned.payload())
        head = TreeHead(self.log_id, size, unsigned.root_hash, at, sig.keyid, sig.signature)
        conn.execute("INSERT INTO audit_heads (tree_size, root_hash, at, frontier, keyid, signature) VALUES (?, ?, ?, ?, ?, ?)",
                     (size, head.root_hash, at, json.dumps([[h, x.hex()] for h, x in frontier]), head.keyid, head.signature))
        return head

    # -- reading -----------------------------------------------------------------------------

    def events(self, kind: str | None = None, subject: str | None = None) -> list[Event]:
        sql, params = "SELECT idx, at, kind, subject, actor, entry, leaf_hash FROM audit_events", []
        where = [c for c, v in (("kind = ?", kind), ("subject = ?", subject)) if v is not None]
        if where:
            sql += " WHERE " + " AND ".join(where)
            params = [v for v in (kind, subject) if v is not None]
        with self.db.connection() as conn:
            return [Event(int(r[0]), *r[1:]) for r in conn.all(sql + " ORDER BY idx", tuple(params))]

    def heads(self) -> list[TreeHead]:
        with self.db.connection() as conn:
            rows = conn.all("SELECT tree_size, root_hash, at, keyid, signature FROM audit_heads ORDER BY tree_size")
        return [TreeHead(self.log_id, int(s), r, at, k, sig) for s, r, at, k, sig in rows]

    def head(self) -> TreeHead | None:
        with self.db.connection() as conn:
            r = conn.one("SELECT tree_size, root_hash, at, keyid, signature FROM audit_heads ORDER BY tree_size DESC LIMIT 1")
        return None if r is None else TreeHead(self.log_id, int(r[0]), r[1], r[2], r[3], r[4])


    # -- proofs and verification --------------------------------------------------------------

    def prove(self, index: int) -> dict:
        """An inclusion proof bundle for event ``index`` against the latest signed head (checkable offline)."""
        return self.prove_many([index])[0]

    def prove_many(self, indices: list[int]) -> list[dict]:
        """Inclusion proof bundles for several events: the log is read and its tree built once."""
        head = self.head()
        size = 0 if head is None else head.tree_size
        bad = [i for i in indices if not 0 <= i < size]
        if bad:
            raise AuditError(f"no event {bad[0]} in the audit log (it holds {size})")
        events = self.events()[:size]
        tree = _tree(events)
        keys = {k: v.to_dict() for k, v in self.public_keys().items()}
        return [{"format": PROOF_FORMAT, "event": json.loads(events[i].entry), "entry": events[i].entry, "leaf_index": i,
                 "leaf_hash": tree.levels[0][i].hex(), "tree_head": head.to_dict(),
                 "inclusion_proof": [h.hex() for h in tree.inclusion_proof(i, size)], "log_public_keys": keys} for i in indices]

    def consistency(self, old_size: int, new_size: int | None = None) -> dict:
        """A consistency proof between two signed heads of this log (old must be a prefix of new)."""
        heads = {h.tree_size: h for h in self.heads()}
        new_size = max(heads) if new_size is None and heads else new_size
        if old_size not in heads or new_size not in heads:
            raise AuditError(f"no signed tree head of size {old_size if old_size not in heads else new_size}")
        tree = _tree(self.events()[:new_size])
        return {"old": heads[old_size].to_dict(), "new": heads[new_size].to_dict(),
                "consistency_proof": [h.hex() for h in tree.consistency_proof(old_size, new_size)]}

    def verify(self) -> VerifyReport:
        """Re-check the whole log: every entry against its leaf hash and position, every signed head against the leaves."""
        return verify_records(self.events(), self.heads(), self.public_keys())

    def export(self) -> dict:
        """The whole log (events, signed heads, public keys) as JSON, verifiable offline with :func:`verify_export`."""
        return {"format": "avops-audit-log/1", "log_id": self.log_id,
                "events": [asdict(e) for e in self.events()], "heads": [h.to_dict() for h in self.heads()],
                "public_keys": {k: v.to_dict() for k, v in self.public_keys().items()}}


def _tree(events: list[Event]) -> merkle.Tree:
    """The tree of the entries as stored now (leaf hashes recomputed, never read from the log)."""
    return merkle.Tree([merkle.leaf_hash(e.entry.encode()) for e in events])


def verify_export(export: dict, trusted_keys: dict[str, Key] | None = None) -> VerifyReport:
    """:meth:`AuditLog.verify` on an exported log (an auditor's copy), with pinned keys when given."""
    keys = trusted_keys or {k: Key.from_dict(k, dict(v)) for k, v in export.get("public_keys", {}).items()}
    return verify_records([Event(**e) for e in export["events"]], [TreeHead.from_dict(h) for h in export["heads"]], keys)


def verify_records(events: list[Event], heads: list[TreeHead], keys: dict[str, Key]) -> VerifyReport:
    """Every entry against its leaf hash and position; every signed head against the tree of the entries."""
    report = VerifyReport(size=len(events), heads=len(heads))
    expected = 0
    for e in events:
        if e.index != expected:
            report.problems.append(f"events {expected}..{e.index - 1} are missing: the log jumps from {expected - 1} to {e.index} "
                                   "(entries were deleted)")
            expected = e.index
        expected += 1
        try:
            body = json.loads(e.entry)
        except ValueError:
            report.problems.append(f"event {e.index}: its entry is not valid JSON any more (edited)")
            continue
        if body.get("index") != e.index:
            report.problems.append(f"event at position {e.index} holds the entry logged as event {body.get('index')}: "
                                   "entries were reordered")
        if merkle.leaf_hash(e.entry.encode()).hex() != e.leaf_hash:
            report.problems.append(f"event {e.index} ({e.kind} {e.subject}): its entry no longer matches the leaf hash "
                                   "recorded when it was logged (edited)")
        for col in ("at", "kind", "subject", "actor"):
            if body.get(col) != getattr(e, col):
                report.problems.append(f"event {e.index}: column {col!r} says {getattr(e, col)!r}, the logged entry says "
                                       f"{body.get(col)!r} (edited)")
    tree = _tree(events)
    good, later = 0, []
    for h in heads:
        why = h.verify(keys)
        if why:
            report.problems.append(why)
            continue
        if h.tree_size > tree.size:
            report.problems.append(f"signed tree head of size {h.tree_size} ({h.timestamp}) covers more events than the "
                                   f"log's {tree.size}: events {tree.size}..{h.tree_size - 1} were deleted")
            continue
        if tree.root(h.tree_size).hex() == h.root_hash:
            good = h.tree_size
        elif later or any("does not match the log" in p for p in report.problems):
            later.append(h.tree_size)  # follows from the first mismatch; summarised below
        else:
            report.problems.append(f"signed tree head of size {h.tree_size} ({h.timestamp}) does not match the log: "
                                   f"an event in {good}..{h.tree_size - 1} was changed, removed or reordered after it was signed")
    if later:
        report.problems.append(f"{len(later)} later signed tree head(s) (sizes {later[0]}..{later[-1]}) no longer match either")
    if heads and heads[-1].tree_size < tree.size:
        report.problems.append(f"events {heads[-1].tree_size}..{tree.size - 1} are not covered by any signed tree head "
                               "(written around the log)")
    report.root_hash = tree.root().hex()
    return report


def record(registry, kind: str, subject: str, data: dict, actor: str, run_id: str | None = None) -> int | None:
    """Log an event in ``registry``'s audit log when it has one; returns the event's index (None when unaudited)."""
    audit = getattr(registry, "audit", None)
    return None if audit is None else audit.append(kind, subject, data, actor, run_id).index


def check_proof(bundle: dict, trusted_keys: dict[str, Key] | None = None, trusted_head: dict | None = None) -> list[str]:
    """Check an inclusion proof bundle offline; returns the problems (empty when it holds).

    ``trusted_keys`` are the log keys the auditor pinned (default: the keys the bundle carries,
    which only proves internal consistency); ``trusted_head`` is a head the auditor obtained
    elsewhere (published, notarised) that the bundle's head must equal.
    """
    problems = []
    if bundle.get("format") != PROOF_FORMAT:
        return [f"not an avops audit proof (format {bundle.get('format')!r})"]
    head = TreeHead.from_dict(bundle["tree_head"])
    keys = trusted_keys or {k: Key.from_dict(k, dict(v)) for k, v in bundle.get("log_public_keys", {}).items()}
    why = head.verify(keys)
    if why:
        problems.append(why)
    if trusted_head is not None and TreeHead.from_dict(trusted_head) != head:
        problems.append(f"the proof's tree head (size {head.tree_size}, root {head.root_hash[:16]}) is not the trusted head "
                        f"(size {trusted_head['tree_size']}, root {str(trusted_head['root_hash'])[:16]})")
    leaf = merkle.leaf_hash(bundle["entry"].encode())
    if leaf.hex() != bundle.get("leaf_hash"):
        problems.append("the event entry does not hash to the proof's leaf hash (the entry was changed)")
    if json.loads(bundle["entry"]) != bundle.get("event"):
        problems.append("the readable event differs from the entry that was logged")
    if not merkle.verify_inclusion(leaf, int(bundle["leaf_index"]), head.tree_size,
                                   [bytes.fromhex(x) for x in bundle["inclusion_proof"]], bytes.fromhex(head.root_hash)):
        problems.append(f"inclusion proof does not lead from event {bundle['leaf_index']} to the signed root "
                        f"{head.root_hash[:16]} of size {head.tree_size}")
    return problems


EXPORTS_KEY = "audit/exports"


def export_to_store(registry, store, refs_root) -> tuple[str, dict]:
    """The audit log and the registry (versions, stages, full history) as one content-addressed JSON object.

    Stored where the configured object store keeps everything else (local, or the S3 bucket), with
    a ref ``audit/exports[latest]`` naming it: an auditor's copy that outlives the database, and
    that :func:`verify_export` re-checks offline.
    """
    log = registry.audit
    if log is None:
        raise AuditError("this registry has no audit log (open it with its audit keys)")
    body = {"format": "avops-audit-export/1", "exported_at": _now(), "audit": log.export(),
            "registry": {"versions": [asdict(v) for v in registry.list()], "history": [asdict(h) for h in registry.history()]}}
    digest = store.put_json(body)
    report = verify_export(body["audit"])
    ref = {"export": digest, "events": report.size, "root_hash": report.root_hash, "published_at": body["exported_at"]}
    store.write_ref(refs_root, EXPORTS_KEY, "latest", ref)
    return digest, ref
