"""One contract for dataset versioning, run against every backend.

``embedded`` always runs; ``lakefs`` runs only against a real server named by
LAKEFS_ENDPOINT / LAKEFS_ACCESS_KEY_ID / LAKEFS_SECRET_ACCESS_KEY (optionally
LAKEFS_STORAGE_NAMESPACE as a prefix), each test in its own throwaway repository.
"""

import hashlib
import itertools
import multiprocessing
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from avops.home import HomeLayout
from avops.store import ObjectStore
from avops.versioning.base import Commit, ConflictError, DatasetRepository, VersioningError
from avops.versioning.embedded import EmbeddedRepository, compute_commit_id
from avops.versioning.factory import open_repository
from avops.versioning.lakefs_backend import LakeFSRepository

LAKEFS_ENV = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")
RUN_ID = uuid.uuid4().hex[:8]
_repo_counter = itertools.count()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _embedded(root: Path, **kwargs) -> EmbeddedRepository:
    return EmbeddedRepository(root / "versioning", "curated-sets", ObjectStore(root / "objects"), **kwargs)


@pytest.fixture(params=["embedded", "lakefs"])
def new_repo(request, tmp_path) -> Iterator[DatasetRepository]:
    """A repository that does not exist yet (ensure() not called)."""
    if request.param == "embedded":
        yield _embedded(tmp_path)
        return
    if not all(os.environ.get(v) for v in LAKEFS_ENV):
        pytest.skip("lakeFS not configured: set LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID, LAKEFS_SECRET_ACCESS_KEY")
    name = f"avops-test-{RUN_ID}-{next(_repo_counter)}"
    prefix = os.environ.get("LAKEFS_STORAGE_NAMESPACE")
    repo = open_repository(
        "lakefs", name, home=HomeLayout(tmp_path), storage_namespace=f"{prefix.rstrip('/')}/{name}" if prefix else None
    )
    yield repo
    try:
        repo.delete_repository()
    except VersioningError:
        pass


@pytest.fixture()
def repo(new_repo) -> DatasetRepository:
    new_repo.ensure()
    return new_repo


def commit_file(repo: DatasetRepository, branch: str, path: str, data: bytes, message: str = "", **metadata: str) -> Commit:
    repo.put(branch, path, data)
    return repo.commit(branch, message or f"write {path}", metadata)


# ---- the contract -------------------------------------------------------------------


def test_ensure_is_idempotent(new_repo):
    new_repo.ensure()
    first = new_repo.branches()
    assert set(first) == {"main"}
    new_repo.ensure()
    new_repo.ensure()
    assert new_repo.branches() == first
    assert [c.id for c in new_repo.log("main")] == [first["main"]]


def test_put_then_get_on_branch_sees_staged_data(repo):
    head = repo.resolve("main")
    digest = repo.put("main", "train/a.bin", b"alpha")
    assert digest == sha(b"alpha")
    assert repo.get("main", "train/a.bin") == b"alpha"
    assert repo.list("main") == {"train/a.bin": digest}
    assert repo.list("main", prefix="val/") == {}
    assert repo.resolve("main") == head, "staging must not move the branch head"


def test_commit_then_get_by_commit_id(repo):
    parent = repo.resolve("main")
    c = commit_file(repo, "main", "train/a.bin", b"alpha", "first set", run_id="r1", labeler="v3")
    assert c.parents == (parent,)
    assert c.message == "first set"
    assert c.metadata == {"run_id": "r1", "labeler": "v3"}
    assert datetime.fromisoformat(c.created_at).utcoffset() == timedelta(0)
    assert repo.resolve("main") == c.id
    assert repo.get(c.id, "train/a.bin") == b"alpha"
    assert repo.list(c.id) == {"train/a.bin": sha(b"alpha")}
    assert repo.get_commit(c.id) == c


def test_later_change_does_not_alter_old_commit(repo):
    c1 = commit_file(repo, "main", "labels.json", b"v1")
    c2 = commit_file(repo, "main", "labels.json", b"v2")
    repo.put("main", "labels.json", b"v3-staged")
    assert repo.get(c1.id, "labels.json") == b"v1"
    assert repo.get(c2.id, "labels.json") == b"v2"
    assert repo.get("main", "labels.json") == b"v3-staged"
    assert repo.list(c1.id) == {"labels.json": sha(b"v1")}


def test_branch_from_commit_and_tag(repo):
    c1 = commit_file(repo, "main", "labels.json", b"v1")
    commit_file(repo, "main", "labels.json", b"v2")
    repo.create_branch("from-c1", source=c1.id)
    assert repo.branches()["from-c1"] == c1.id
    assert repo.get("from-c1", "labels.json") == b"v1"
    repo.tag("release-1", c1.id)
    repo.create_branch("from-tag", source="release-1")
    assert repo.resolve("from-tag") == c1.id
    with pytest.raises(ConflictError):
        repo.create_branch("from-c1", source="main")
    with pytest.raises(VersioningError):
        repo.create_branch("from-nowhere", source="no-such-ref")


def test_fast_forward_merge(repo):
    repo.create_branch("mat-1")
    cf = commit_file(repo, "mat-1", "train/a.bin", b"alpha", "materialize", partition="2026-02")
    merged = repo.merge("mat-1", "main", metadata={"merged_by": "test"})
    assert repo.get("main", "train/a.bin") == b"alpha"
    assert repo.resolve("main") == merged.id
    assert cf.id in [c.id for c in repo.log("main")]
    if isinstance(repo, EmbeddedRepository):  # lakeFS always writes a merge commit (lakeFS#3316)
        assert merged.id == cf.id


def test_non_conflicting_merge_has_two_parents(repo):
    commit_file(repo, "main", "shared.txt", b"base")
    repo.create_branch("feature")
    cf = commit_file(repo, "feature", "a.txt", b"from feature")
    cm = commit_file(repo, "main", "b.txt", b"from main")
    merged = repo.merge("feature", "main", "merge feature", {"dataset": "curated"})
    assert set(merged.parents) == {cf.id, cm.id}
    assert merged.metadata.get("dataset") == "curated"
    assert repo.resolve("main") == merged.id
    assert repo.list("main") == {"a.txt": sha(b"from feature"), "b.txt": sha(b"from main"), "shared.txt": sha(b"base")}


def test_conflicting_merge_raises_and_leaves_main_unchanged(repo):
    commit_file(repo, "main", "shared.txt", b"base")
    repo.create_branch("feature")
    commit_file(repo, "feature", "shared.txt", b"feature edit")
    main_head = commit_file(repo, "main", "shared.txt", b"main edit").id
    with pytest.raises(ConflictError) as exc:
        repo.merge("feature", "main")
    if isinstance(repo, EmbeddedRepository):
        assert "shared.txt" in str(exc.value)
    assert repo.resolve("main") == main_head
    assert repo.get("main", "shared.txt") == b"main edit"


def test_tags_are_immutable(repo):
    c1 = commit_file(repo, "main", "labels.json", b"v1")
    repo.tag("v1", "main")
    repo.tag("v1", c1.id)  # same commit again: fine
    c2 = commit_file(repo, "main", "labels.json", b"v2")
    with pytest.raises(ConflictError):
        repo.tag("v1", c2.id)
    assert repo.resolve("v1") == c1.id
    assert repo.get("v1", "labels.json") == b"v1"


def test_log_is_newest_first_and_round_trips_metadata(repo):
    commits = [commit_file(repo, "main", f"part-{i}.bin", bytes([i]), f"step {i}", step=str(i)) for i in range(3)]
    log = repo.log("main", limit=3)
    assert [c.id for c in log] == [c.id for c in reversed(commits)]
    assert [c.metadata for c in log] == [{"step": "2"}, {"step": "1"}, {"step": "0"}]
    assert [c.message for c in log] == ["step 2", "step 1", "step 0"]
    assert len(repo.log("main", limit=2)) == 2
    assert repo.log(commits[0].id)[0] == commits[0]


def test_commit_with_nothing_staged_raises(repo):
    with pytest.raises(VersioningError, match="nothing to commit"):
        repo.commit("main", "empty", {})


@pytest.mark.parametrize("path", ["../escape.bin", "/abs/path.bin", "a/../b.bin", "a//b.bin", ""])
def test_bad_path_raises(repo, path):
    with pytest.raises(VersioningError, match="invalid object path"):
        repo.put("main", path, b"x")
    with pytest.raises(VersioningError, match="invalid object path"):
        repo.get("main", path)


def test_missing_object_error_names_ref_and_path(repo):
    with pytest.raises(VersioningError) as exc:
        repo.get("main", "nope/missing.bin")
    assert "main" in str(exc.value) and "nope/missing.bin" in str(exc.value)


def test_delete_branch(repo):
    repo.create_branch("scratch")
    repo.delete_branch("scratch")
    assert "scratch" not in repo.branches()
    with pytest.raises(VersioningError):
        repo.delete_branch("main")


def test_metadata_values_must_be_strings(repo):
    repo.put("main", "a.bin", b"a")
    with pytest.raises(VersioningError, match="strings"):
        repo.commit("main", "bad", {"rows": 3})  # type: ignore[dict-item]


# ---- embedded only --------------------------------------------------------------------


def _fixed_clock() -> datetime:
    return datetime(2026, 2, 1, 12, 0, 0, tzinfo=timezone.utc)


def test_embedded_commit_id_is_deterministic(tmp_path):
    ids = []
    for root in (tmp_path / "one", tmp_path / "two"):
        r = _embedded(root, clock=_fixed_clock)
        r.ensure()
        c = commit_file(r, "main", "train/a.bin", b"alpha", "first", run="r1")
        ids.append((r.resolve("main"), c))
    assert ids[0][0] == ids[1][0]
    c = ids[0][1]
    tree = ObjectStore(tmp_path / "one" / "objects").get_json(c.id)["tree"]
    assert compute_commit_id(tree, c.parents, "first", {"run": "r1"}, c.created_at) == c.id
    assert compute_commit_id(tree, list(reversed(["a" * 64, "b" * 64])), "m", {}, c.created_at) == compute_commit_id(
        tree, ["a" * 64, "b" * 64], "m", {}, c.created_at
    )
    assert compute_commit_id(tree, c.parents, "first", {"run": "r2"}, c.created_at) != c.id
    assert compute_commit_id(tree, c.parents, "first", {"run": "r1"}, "2026-02-01T12:00:01.000000Z") != c.id


def test_embedded_verify_detects_corrupted_object(tmp_path):
    r = _embedded(tmp_path)
    r.ensure()
    c = commit_file(r, "main", "train/a.bin", b"alpha")
    assert r.verify(c.id) == []
    obj = r.store.path(sha(b"alpha"))
    obj.chmod(0o644)
    obj.write_bytes(b"tampered")
    problems = r.verify(c.id)
    assert len(problems) == 1 and "train/a.bin" in problems[0] and "corrupted" in problems[0]
    obj.unlink()
    assert "missing" in r.verify(c.id)[0]


def test_embedded_staging_survives_a_restart(tmp_path):
    _embedded(tmp_path).ensure()
    _embedded(tmp_path).put("main", "a.bin", b"staged before crash")
    reopened = _embedded(tmp_path)
    assert reopened.get("main", "a.bin") == b"staged before crash"
    assert reopened.commit("main", "after restart", {}).message == "after restart"


def test_embedded_merge_into_dirty_branch_refuses(tmp_path):
    r = _embedded(tmp_path)
    r.ensure()
    r.create_branch("feature")
    commit_file(r, "feature", "a.bin", b"a")
    r.put("main", "b.bin", b"uncommitted")
    with pytest.raises(VersioningError, match="uncommitted"):
        r.merge("feature", "main")


def _commit_many(root: str, branch: str, n: int) -> list[str]:
    """Commit n times to its own branch, and stage on the shared 'main' in between (a lost-update trap)."""
    repo = _embedded(Path(root))
    ids = []
    for i in range(n):
        ids.append(commit_file(repo, branch, f"{branch}/{i}.bin", f"{branch}-{i}".encode(), f"{branch} {i}").id)
        repo.put("main", f"staged/{branch}-{i}.bin", b"x")
    return ids


def test_embedded_concurrent_processes_commit_to_different_branches(tmp_path):
    r = _embedded(tmp_path)
    r.ensure()
    r.create_branch("worker-a")
    r.create_branch("worker-b")
    n = 15
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_commit_many, [(str(tmp_path), "worker-a", n), (str(tmp_path), "worker-b", n)])
    for branch, ids in zip(("worker-a", "worker-b"), results):
        assert r.resolve(branch) == ids[-1]
        assert [c.id for c in r.log(branch, limit=n)] == list(reversed(ids))
        assert r.list(branch) == {f"{branch}/{i}.bin": sha(f"{branch}-{i}".encode()) for i in range(n)}
        assert r.verify(ids[-1]) == []
    assert len(r.list("main", prefix="staged/")) == 2 * n, "a concurrent put lost another process's staged object"


# ---- wiring ---------------------------------------------------------------------------


def test_lakefs_connection_failure_is_a_clear_versioning_error():
    repo = LakeFSRepository("curated-sets", "http://127.0.0.1:1", "key", "secret")
    with pytest.raises(VersioningError, match=r"cannot reach lakeFS at http://127\.0\.0\.1:1.*LAKEFS_ENDPOINT"):
        repo.ensure()
    with pytest.raises(VersioningError, match="cannot reach lakeFS"):
        repo.get("main", "a.bin")


def test_factory_errors_are_actionable(tmp_path, monkeypatch):
    for var in LAKEFS_ENV:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(VersioningError, match="unknown versioning backend 'git'"):
        open_repository("git", "curated-sets", home=HomeLayout(tmp_path))
    with pytest.raises(VersioningError, match="set LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID, LAKEFS_SECRET_ACCESS_KEY"):
        open_repository("lakefs", "curated-sets", home=HomeLayout(tmp_path))
    assert isinstance(open_repository("lakefs", "curated-sets", home=HomeLayout(tmp_path), lakefs_endpoint="http://x:8000",
                                      access_key_id="k", secret_access_key="s"), LakeFSRepository)


def test_dagster_resource_opens_embedded_repository_in_home(tmp_path):
    from resources.versioning import DatasetVersioning

    repo = DatasetVersioning(home=str(tmp_path)).open()
    assert isinstance(repo, EmbeddedRepository)
    assert repo.dir.is_relative_to(HomeLayout(tmp_path).refs)
    assert repo.store.root == HomeLayout(tmp_path).objects
    assert set(repo.branches()) == {"main"}
