"""Dataset versioning without a server: the default install's backend.

Objects, trees and commits all live in the shared content-addressed
:class:`~avops.store.ObjectStore`, so a commit id is the sha256 of its own canonical
JSON and can never be rewritten; re-hashing a commit's objects (:meth:`verify`)
proves lineage. Only branches, tags and per-branch staging areas are mutable: small
JSON files replaced atomically, updated under an ``flock`` so several processes on
one machine can write safely.

Layout (``root/<name>/``)::

    repository.json       name, default branch
    branches/<b>.json     {"commit": id}
    tags/<t>.json         {"commit": id}
    staging/<b>.json      {"entries": {path: sha256}} staged on top of the branch head
    .lock                 flock target for every ref/staging update
"""

from __future__ import annotations

import fcntl
import heapq
import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Mapping

from avops.store import ObjectStore, atomic_write_json, sha256_bytes
from avops.versioning.base import (
    DEFAULT_BRANCH,
    Commit,
    ConflictError,
    DatasetRepository,
    VersioningError,
    iso_utc,
    validate_branch_name,
    validate_metadata,
    validate_path,
    validate_prefix,
    validate_repository_name,
    validate_tag_name,
)

COMMIT_KIND = "avops.versioning.commit/v1"
TREE_KIND = "avops.versioning.tree/v1"
INITIAL_MESSAGE = "Repository created"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Ref names that are safe to look up as file names (validated branch and tag names
# always are); guards lookups of arbitrary refs such as typos or commit ids.
BRANCH_FILE_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def canonical_json(obj: object) -> bytes:
    """The exact bytes that are hashed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def commit_payload(
    tree: str, parents: tuple[str, ...] | list[str], message: str, metadata: Mapping[str, str], created_at: str
) -> dict[str, object]:
    """The stored commit object; parents are sorted so the id does not depend on argument order."""
    return {
        "kind": COMMIT_KIND,
        "tree": tree,
        "parents": sorted(parents),
        "message": message,
        "metadata": dict(metadata),
        "created_at": created_at,
    }


def compute_commit_id(
    tree: str, parents: tuple[str, ...] | list[str], message: str, metadata: Mapping[str, str], created_at: str
) -> str:
    """sha256 of the canonical JSON of (tree digest, sorted parents, message, metadata, created_at)."""
    return sha256_bytes(canonical_json(commit_payload(tree, parents, message, metadata, created_at)))


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class EmbeddedRepository(DatasetRepository):
    """A dataset repository stored under ``root/<name>`` with objects in ``store``.

    ``clock`` exists so tests (and reproducible rebuilds) can pin ``created_at`` and
    thereby the commit ids.
    """

    def __init__(
        self,
        root: Path | str,
        name: str,
        store: ObjectStore | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.name = validate_repository_name(name)
        self.root = Path(root)
        self.dir = self.root / name
        self.store = store if store is not None else ObjectStore(self.root / "objects")
        self._clock = clock

    def __repr__(self) -> str:
        return f"EmbeddedRepository(name={self.name!r}, dir={str(self.dir)!r})"

    # ---- locking and ref files -------------------------------------------------

    @contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        """Serialize ref/staging updates across processes (flock is per open file, so threads work too)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _require_repo(self) -> None:
        if not (self.dir / "repository.json").exists():
            raise VersioningError(
                f"dataset repository {self.name!r} does not exist under {self.dir}; call ensure() first "
                "(or check AVOPS_HOME points at the right folder)"
            )

    def _branch_file(self, name: str) -> Path:
        return self.dir / "branches" / f"{name}.json"

    def _tag_file(self, name: str) -> Path:
        return self.dir / "tags" / f"{name}.json"

    def _staging_file(self, branch: str) -> Path:
        return self.dir / "staging" / f"{branch}.json"

    @staticmethod
    def _read_ref(path: Path) -> str | None:
        try:
            return json.loads(path.read_text())["commit"]
        except FileNotFoundError:
            return None

    def _branch_head(self, name: str) -> str | None:
        if not BRANCH_FILE_SAFE.match(name):
            return None
        return self._read_ref(self._branch_file(name))

    def _require_branch(self, name: str) -> str:
        validate_branch_name(name)
        self._require_repo()
        head = self._branch_head(name)
        if head is None:
            raise VersioningError(
                f"branch {name!r} does not exist in dataset repository {self.name!r}; "
                f"create it with create_branch({name!r}) (existing: {sorted(self._list_refs('branches'))})"
            )
        return head

    def _staged(self, branch: str) -> dict[str, str]:
        try:
            return dict(json.loads(self._staging_file(branch).read_text())["entries"])
        except FileNotFoundError:
            return {}

    def _list_refs(self, kind: str) -> dict[str, str]:
        folder = self.dir / kind
        if not folder.is_dir():
            return {}
        out = {}
        for p in sorted(folder.glob("*.json")):
            commit = self._read_ref(p)
            if commit is not None:
                out[p.stem] = commit
        return out

    # ---- objects ---------------------------------------------------------------

    def _put_tree(self, entries: Mapping[str, str]) -> str:
        return self.store.put_bytes(canonical_json({"kind": TREE_KIND, "entries": dict(sorted(entries.items()))}))

    def _load(self, digest: str, kind: str, what: str) -> dict:
        try:
            obj = json.loads(self.store.get_bytes(digest))
        except FileNotFoundError:
            raise VersioningError(f"{what} {digest} is missing from the object store {self.store.root}") from None
        except (ValueError, UnicodeDecodeError):
            raise VersioningError(f"{what} {digest} is not a readable {kind} object (corrupted store?)") from None
        if not isinstance(obj, dict) or obj.get("kind") != kind:
            raise VersioningError(f"{digest} is not a {what} in dataset repository {self.name!r}")
        return obj

    def _commit_obj(self, commit_id: str) -> dict:
        if not _HEX64.match(commit_id or ""):
            raise VersioningError(f"{commit_id!r} is not a commit id (expected 64 lowercase hex characters)")
        return self._load(commit_id, COMMIT_KIND, "commit")

    def _tree(self, commit_id: str) -> dict[str, str]:
        return dict(self._load(self._commit_obj(commit_id)["tree"], TREE_KIND, "tree")["entries"])

    def _write_commit(
        self, tree: Mapping[str, str], parents: tuple[str, ...], message: str, metadata: Mapping[str, str]
    ) -> Commit:
        tree_digest = self._put_tree(tree)
        payload = commit_payload(tree_digest, parents, message, metadata, iso_utc(self._clock()))
        commit_id = self.store.put_bytes(canonical_json(payload))
        return self._to_commit(commit_id, payload)

    @staticmethod
    def _to_commit(commit_id: str, obj: Mapping) -> Commit:
        return Commit(
            id=commit_id,
            parents=tuple(obj["parents"]),
            message=obj["message"],
            metadata=dict(obj["metadata"]),
            created_at=obj["created_at"],
        )

    # ---- contract ----------------------------------------------------------------

    def ensure(self) -> None:
        with self._locked():
            if self._branch_head(DEFAULT_BRANCH) is None:
                initial = self._write_commit({}, (), INITIAL_MESSAGE, {})
                atomic_write_json(self._branch_file(DEFAULT_BRANCH), {"commit": initial.id})
            if (self.dir / "repository.json").exists():
                return
            atomic_write_json(self.dir / "repository.json", {"name": self.name, "default_branch": DEFAULT_BRANCH})

    def create_branch(self, name: str, source: str = DEFAULT_BRANCH) -> None:
        validate_branch_name(name)
        self._require_repo()
        with self._locked():
            if self._branch_head(name) is not None:
                raise ConflictError(f"branch {name!r} already exists in {self.name!r}; pick another name or delete_branch({name!r}) first")
            atomic_write_json(self._branch_file(name), {"commit": self.resolve(source)})

    def delete_branch(self, name: str) -> None:
        validate_branch_name(name)
        if name == DEFAULT_BRANCH:
            raise VersioningError(f"refusing to delete the default branch {DEFAULT_BRANCH!r} of {self.name!r}")
        with self._locked():
            self._require_branch(name)
            self._staging_file(name).unlink(missing_ok=True)
            self._branch_file(name).unlink()

    def branches(self) -> dict[str, str]:
        self._require_repo()
        return self._list_refs("branches")

    def put(self, branch: str, path: str, data: bytes) -> str:
        validate_path(path)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise VersioningError(f"put({branch!r}, {path!r}) needs bytes, got {type(data).__name__}; encode text first")
        self._require_branch(branch)
        digest = self.store.put_bytes(bytes(data))  # outside the lock: content-addressed writes never conflict
        with self._locked():
            self._require_branch(branch)
            entries = self._staged(branch)
            entries[path] = digest
            atomic_write_json(self._staging_file(branch), {"entries": entries})
        return digest

    def _entries(self, ref: str) -> tuple[dict[str, str], str]:
        """Tree at ref (a branch includes its staged changes) and a description for errors."""
        self._require_repo()
        if BRANCH_FILE_SAFE.match(ref):
            with self._locked(shared=True):  # head and staging must be read as one snapshot
                head = self._branch_head(ref)
                if head is not None:
                    return {**self._tree(head), **self._staged(ref)}, f"branch {ref!r}"
        return self._tree(self.resolve(ref)), f"ref {ref!r}"

    def get(self, ref: str, path: str) -> bytes:
        validate_path(path)
        entries, where = self._entries(ref)
        digest = entries.get(path)
        if digest is None:
            raise VersioningError(f"no object {path!r} at {where} of dataset repository {self.name!r}; list({ref!r}) shows what exists")
        try:
            return self.store.get_bytes(digest)
        except FileNotFoundError:
            raise VersioningError(
                f"object {path!r} at {where} ({digest}) is missing from the object store {self.store.root}; run verify() on the commit"
            ) from None

    def list(self, ref: str, prefix: str = "") -> dict[str, str]:
        validate_prefix(prefix)
        entries, _ = self._entries(ref)
        return {p: d for p, d in sorted(entries.items()) if p.startswith(prefix)}

    def commit(self, branch: str, message: str, metadata: dict[str, str]) -> Commit:
        metadata = validate_metadata(metadata)
        with self._locked():
            head = self._require_branch(branch)
            staged = self._staged(branch)
            tree = self._tree(head)
            if not staged:
                raise VersioningError(f"nothing to commit on branch {branch!r} of {self.name!r}: put() objects first")
            new_tree = {**tree, **staged}
            if new_tree == tree:
                self._staging_file(branch).unlink(missing_ok=True)
                raise VersioningError(
                    f"nothing to commit on branch {branch!r} of {self.name!r}: every staged object is identical to the head"
                )
            commit = self._write_commit(new_tree, (head,), message, metadata)
            atomic_write_json(self._branch_file(branch), {"commit": commit.id})
            self._staging_file(branch).unlink(missing_ok=True)
            return commit

    def merge(
        self, source: str, into: str = DEFAULT_BRANCH, message: str = "", metadata: dict[str, str] | None = None
    ) -> Commit:
        """Fast-forward when ``into`` is an ancestor of ``source``; otherwise a two-parent merge commit.

        Both sides changing a path differently since the merge base is a conflict: nothing
        is written and ConflictError names the paths.
        """
        metadata = validate_metadata(metadata)
        with self._locked():
            dst = self._require_branch(into)
            if self._staged(into):
                raise VersioningError(f"branch {into!r} has uncommitted changes; commit them before merging into it")
            src = self.resolve(source)
            if src == dst or self._is_ancestor(src, dst):
                return self.get_commit(dst)  # already contained: nothing to do
            if self._is_ancestor(dst, src):
                atomic_write_json(self._branch_file(into), {"commit": src})
                return self.get_commit(src)
            base = self._merge_base(src, dst)
            base_tree = self._tree(base) if base else {}
            src_tree, dst_tree = self._tree(src), self._tree(dst)
            merged: dict[str, str] = {}
            conflicts = []
            for path in sorted(set(base_tree) | set(src_tree) | set(dst_tree)):
                b, s, d = base_tree.get(path), src_tree.get(path), dst_tree.get(path)
                if s == d or s == b:
                    result = d
                elif d == b:
                    result = s
                else:
                    conflicts.append(path)
                    continue
                if result is not None:
                    merged[path] = result
            if conflicts:
                shown = ", ".join(conflicts[:20]) + (f" (+{len(conflicts) - 20} more)" if len(conflicts) > 20 else "")
                raise ConflictError(
                    f"cannot merge {source!r} into {into!r}: both changed {len(conflicts)} path(s) since {base or 'the start'}: "
                    f"{shown}. Resolve on {source!r} (put the wanted version and commit), then merge again"
                )
            commit = self._write_commit(merged, (dst, src), message or f"Merge {source!r} into {into!r}", metadata)
            atomic_write_json(self._branch_file(into), {"commit": commit.id})
            return commit

    def tag(self, name: str, ref: str) -> None:
        validate_tag_name(name)
        self._require_repo()
        with self._locked():
            commit_id = self.resolve(ref)
            existing = self._read_ref(self._tag_file(name))
            if existing == commit_id:
                return
            if existing is not None:
                raise ConflictError(
                    f"tag {name!r} already points at {existing}; tags are immutable, so tag {commit_id} under a new name"
                )
            atomic_write_json(self._tag_file(name), {"commit": commit_id})

    def resolve(self, ref: str) -> str:
        """Branch, then tag, then full commit id (branch and tag names win over ids)."""
        self._require_repo()
        if not isinstance(ref, str) or not ref:
            raise VersioningError(f"invalid ref {ref!r}: give a branch, tag or commit id")
        if BRANCH_FILE_SAFE.match(ref):
            for path in (self._branch_file(ref), self._tag_file(ref)):
                commit = self._read_ref(path)
                if commit is not None:
                    return commit
        if _HEX64.match(ref) and self.store.has(ref):
            self._commit_obj(ref)
            return ref
        raise VersioningError(
            f"unknown ref {ref!r} in dataset repository {self.name!r}: not a branch "
            f"({sorted(self._list_refs('branches'))}), tag or commit id"
        )

    def get_commit(self, commit_id: str) -> Commit:
        self._require_repo()
        return self._to_commit(commit_id, self._commit_obj(commit_id))

    def log(self, ref: str, limit: int = 50) -> list[Commit]:
        """Newest first over all parents (like ``git log``), so merged-in history shows up too."""
        start = self.resolve(ref)
        out: list[Commit] = []
        if limit <= 0:
            return out
        seen = {start}
        first = self.get_commit(start)
        heap: list[tuple[float, int, Commit]] = []
        counter = 0
        heapq.heappush(heap, (_newest_first(first.created_at), counter, first))
        while heap and len(out) < limit:
            _, _, commit = heapq.heappop(heap)
            out.append(commit)
            for parent in commit.parents:
                if parent not in seen:
                    seen.add(parent)
                    counter += 1
                    pc = self.get_commit(parent)
                    heapq.heappush(heap, (_newest_first(pc.created_at), counter, pc))
        return out

    # ---- graph helpers -----------------------------------------------------------

    def _ancestors(self, commit_id: str) -> set[str]:
        """commit_id and everything reachable from it."""
        seen, stack = {commit_id}, [commit_id]
        while stack:
            for parent in self._commit_obj(stack.pop())["parents"]:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def _is_ancestor(self, maybe_ancestor: str, commit_id: str) -> bool:
        return maybe_ancestor in self._ancestors(commit_id)

    def _merge_base(self, a: str, b: str) -> str | None:
        """The newest common ancestor that is not itself an ancestor of another common one."""
        common = self._ancestors(a) & self._ancestors(b)
        if not common:
            return None
        # A common ancestor that is a strict ancestor of another common one is not "best".
        dominated: set[str] = set()
        for c in sorted(common, key=lambda c: self._commit_obj(c)["created_at"], reverse=True):
            if c not in dominated:
                dominated |= self._ancestors(c) - {c}
        best = (common - dominated) or common
        return max(best, key=lambda c: (self._commit_obj(c)["created_at"], c))

    # ---- lineage -------------------------------------------------------------------

    def verify(self, commit_id: str) -> list[str]:
        """Re-hash the commit, its tree and every object in it; an empty list means intact."""
        problems: list[str] = []

        def check(digest: str, what: str) -> bool:
            path = self.store.path(digest)
            if not path.exists():
                problems.append(f"{what}: object {digest} is missing ({path})")
                return False
            actual = sha256_bytes(path.read_bytes())
            if actual != digest:
                problems.append(f"{what}: object {digest} is corrupted (its content hashes to {actual})")
                return False
            return True

        if not _HEX64.match(commit_id or ""):
            return [f"{commit_id!r} is not a commit id"]
        if not check(commit_id, "commit"):
            return problems
        try:
            obj = self._commit_obj(commit_id)
        except VersioningError as e:
            return [str(e)]
        if not check(obj["tree"], "tree"):
            return problems
        entries = json.loads(self.store.path(obj["tree"]).read_bytes())["entries"]
        for path, digest in sorted(entries.items()):
            check(digest, path)
        return problems


def _newest_first(created_at: str) -> float:
    """Min-heap key that pops the newest commit first."""
    return -datetime.fromisoformat(created_at).timestamp()


__all__ = ["EmbeddedRepository", "canonical_json", "compute_commit_id"]
