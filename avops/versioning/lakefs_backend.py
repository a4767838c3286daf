"""Dataset versioning on a lakeFS server, through the high-level ``lakefs`` SDK (0.16).

For teams that already run lakeFS over S3: same contract as the embedded backend, so
the pipeline is unchanged. Differences that the contract allows and callers should know:

* lakeFS never fast-forwards (treeverse/lakeFS#3316): merging a branch whose base is
  ``main``'s head still creates a merge commit (same content, two parents).
* lakeFS checksums are etags (MD5-ish), so :meth:`put` stores the sha256 as user
  metadata ``avops-sha256`` and :meth:`list` reads it back (hashing the object only
  when someone else uploaded it without that metadata).
* Commit timestamps have one-second resolution.
* Every lakeFS or connection error becomes :class:`VersioningError` /
  :class:`ConflictError` with the action, the server's message and what to check.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import lakefs
import lakefs_sdk
import urllib3
from lakefs.exceptions import (
    BadRequestException,
    ConflictException,
    ForbiddenException,
    LakeFSException,
    NoAuthenticationFound,
    NotAuthorizedException,
    NotFoundException,
    ServerException,
)
from lakefs.models import ObjectInfo

from avops.store import sha256_bytes
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

SHA256_METADATA_KEY = "avops-sha256"


def _detail(e: BaseException) -> str:
    """The server's own message when there is one (lakeFS puts it in the JSON body)."""
    if isinstance(e, ServerException):
        body = e.body if isinstance(e.body, dict) else {}
        return str(body.get("message") or e.reason or f"HTTP {e.status_code}")
    return str(e) or type(e).__name__


def _sha_from_metadata(metadata: dict[str, str] | None) -> str | None:
    """The stored sha256, whatever case/prefix the server echoes the header key with."""
    for key, value in (metadata or {}).items():
        if key.lower().endswith(SHA256_METADATA_KEY):
            return value
    return None


class LakeFSRepository(DatasetRepository):
    """One lakeFS repository; ``storage_namespace`` is needed only to create it (e.g. ``s3://bucket/avops/<name>``)."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        access_key_id: str,
        secret_access_key: str,
        storage_namespace: str | None = None,
    ) -> None:
        self.name = validate_repository_name(name)
        if not endpoint or not access_key_id or not secret_access_key:
            raise VersioningError(
                "lakeFS backend needs an endpoint and credentials: set LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID, LAKEFS_SECRET_ACCESS_KEY"
            )
        self.endpoint = endpoint.rstrip("/")
        self.storage_namespace = storage_namespace or None
        # The SDK appends /api/v1 itself when the endpoint has no path.
        self._client = lakefs.Client(host=self.endpoint, username=access_key_id, password=secret_access_key)
        self._repo = lakefs.repository(self.name, client=self._client)

    def __repr__(self) -> str:
        return f"LakeFSRepository(name={self.name!r}, endpoint={self.endpoint!r})"

    @contextmanager
    def _errors(self, action: str, *, not_found: str = "", conflict: str = "") -> Iterator[None]:
        """Translate SDK, HTTP and connection failures into the contract's exceptions."""
        try:
            yield
        except VersioningError:
            raise
        except ConflictException as e:
            raise ConflictError(f"{action}: {conflict or 'conflict'} (lakeFS: {_detail(e)})") from e
        except NotFoundException as e:
            raise VersioningError(f"{action}: {not_found or 'not found'} (lakeFS: {_detail(e)})") from e
        except (NotAuthorizedException, ForbiddenException) as e:
            raise VersioningError(
                f"{action}: lakeFS at {self.endpoint} refused the request ({_detail(e)}); check LAKEFS_ACCESS_KEY_ID / "
                "LAKEFS_SECRET_ACCESS_KEY and that the user may access repository "
                f"{self.name!r} (protected branches also refuse direct writes)"
            ) from e
        except NoAuthenticationFound as e:
            raise VersioningError(f"{action}: no lakeFS credentials; set LAKEFS_ACCESS_KEY_ID and LAKEFS_SECRET_ACCESS_KEY") from e
        except (LakeFSException, lakefs_sdk.ApiException) as e:
            raise VersioningError(f"{action}: lakeFS error ({_detail(e)})") from e
        except urllib3.exceptions.HTTPError as e:
            raise VersioningError(
                f"{action}: cannot reach lakeFS at {self.endpoint} ({type(e).__name__}); check LAKEFS_ENDPOINT "
                "and that the server is running and reachable from here"
            ) from e

    # ---- helpers -----------------------------------------------------------------

    @staticmethod
    def _to_commit(c: lakefs.Commit) -> Commit:
        return Commit(
            id=c.id,
            parents=tuple(c.parents or ()),
            message=c.message,
            metadata=dict(c.metadata or {}),
            created_at=iso_utc(datetime.fromtimestamp(c.creation_date, tz=timezone.utc)),
        )

    def _default_namespace(self) -> str:
        with self._errors("read the lakeFS storage configuration"):
            cfg = self._client.storage_config
        if cfg.default_namespace_prefix:
            return f"{cfg.default_namespace_prefix.rstrip('/')}/{self.name}"
        if cfg.blockstore_type == "local":
            return f"local://{self.name}"
        raise VersioningError(
            f"cannot create lakeFS repository {self.name!r}: the server has no default storage namespace; "
            f"set storage_namespace (e.g. {cfg.blockstore_namespace_example or 's3://bucket/prefix'}/{self.name})"
        )

    def _ref_exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
            return True
        except VersioningError:
            return False

    # ---- contract ----------------------------------------------------------------

    def ensure(self) -> None:
        action = f"ensure lakeFS repository {self.name!r}"
        try:
            with self._errors(action):
                _ = self._repo.properties
        except VersioningError as e:
            if not isinstance(e.__cause__, NotFoundException):
                raise
            namespace = self.storage_namespace or self._default_namespace()
            with self._errors(action, conflict="storage namespace already used by another repository"):
                self._repo.create(storage_namespace=namespace, default_branch=DEFAULT_BRANCH, exist_ok=True)
            return
        if DEFAULT_BRANCH not in self.branches():
            raise VersioningError(
                f"lakeFS repository {self.name!r} exists but has no {DEFAULT_BRANCH!r} branch; create it or use another repository"
            )

    def delete_repository(self) -> None:
        """Remove the whole repository from lakeFS (tests and teardown only)."""
        with self._errors(f"delete lakeFS repository {self.name!r}"):
            self._repo.delete()

    def create_branch(self, name: str, source: str = DEFAULT_BRANCH) -> None:
        validate_branch_name(name)
        with self._errors(
            f"create branch {name!r} from {source!r} in {self.name!r}",
            not_found=f"source ref {source!r} (or the repository) does not exist",
            conflict=f"branch {name!r} already exists; pick another name or delete it first",
        ):
            self._repo.branch(name).create(source, exist_ok=False)

    def delete_branch(self, name: str) -> None:
        validate_branch_name(name)
        if name == DEFAULT_BRANCH:
            raise VersioningError(f"refusing to delete the default branch {DEFAULT_BRANCH!r} of {self.name!r}")
        with self._errors(f"delete branch {name!r} of {self.name!r}", not_found=f"branch {name!r} does not exist"):
            self._repo.branch(name).delete()

    def branches(self) -> dict[str, str]:
        with self._errors(f"list branches of {self.name!r}", not_found="the repository does not exist; call ensure()"):
            return {b.id: b.head.id for b in self._repo.branches()}

    def put(self, branch: str, path: str, data: bytes) -> str:
        validate_path(path)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise VersioningError(f"put({branch!r}, {path!r}) needs bytes, got {type(data).__name__}; encode text first")
        data = bytes(data)
        digest = sha256_bytes(data)
        with self._errors(
            f"upload {path!r} to branch {branch!r} of {self.name!r}",
            not_found=f"branch {branch!r} (or the repository) does not exist",
        ):
            # pre_sign=False: upload through the server, so no direct storage access is needed here.
            self._repo.branch(branch).object(path).upload(
                data, mode="wb", pre_sign=False, metadata={SHA256_METADATA_KEY: digest}
            )
        return digest

    def get(self, ref: str, path: str) -> bytes:
        validate_path(path)
        try:
            with self._errors(f"read {path!r} at {ref!r}"):
                with self._repo.ref(ref).object(path).reader(mode="rb", pre_sign=False) as reader:
                    return reader.read()
        except VersioningError as e:
            if not isinstance(e.__cause__, NotFoundException):
                raise
            if not self._ref_exists(ref):
                raise VersioningError(f"unknown ref {ref!r} in lakeFS repository {self.name!r} (reading {path!r})") from None
            raise VersioningError(
                f"no object {path!r} at ref {ref!r} of lakeFS repository {self.name!r}; list({ref!r}) shows what exists"
            ) from None

    def list(self, ref: str, prefix: str = "") -> dict[str, str]:
        validate_prefix(prefix)
        out: dict[str, str] = {}
        with self._errors(f"list objects at {ref!r}", not_found=f"ref {ref!r} does not exist"):
            for info in self._repo.ref(ref).objects(prefix=prefix or None, user_metadata=True):
                if isinstance(info, ObjectInfo):
                    out[info.path] = _sha_from_metadata(info.metadata) or ""
        for path, digest in out.items():
            if not digest:  # uploaded by another tool: hash it once here
                out[path] = sha256_bytes(self.get(ref, path))
        return dict(sorted(out.items()))

    def commit(self, branch: str, message: str, metadata: dict[str, str]) -> Commit:
        metadata = validate_metadata(metadata)
        action = f"commit on branch {branch!r} of {self.name!r}"
        with self._errors(action, not_found=f"branch {branch!r} does not exist"):
            lb = self._repo.branch(branch)
            if next(iter(lb.uncommitted(max_amount=1)), None) is None:
                raise VersioningError(f"nothing to commit on branch {branch!r} of {self.name!r}: put() objects first")
            ref = lb.commit(message=message, metadata=metadata)
        return self.get_commit(ref.id)

    def merge(
        self, source: str, into: str = DEFAULT_BRANCH, message: str = "", metadata: dict[str, str] | None = None
    ) -> Commit:
        metadata = validate_metadata(metadata)
        validate_branch_name(into)
        action = f"merge {source!r} into {into!r} of {self.name!r}"
        try:
            with self._errors(action, not_found=f"{source!r} or branch {into!r} does not exist"):
                commit_id = self._repo.ref(source).merge_into(
                    self._repo.branch(into), message=message or f"Merge {source!r} into {into!r}", metadata=metadata
                )
        except ConflictError as e:
            paths = self._conflicting_paths(source, into)
            shown = (": " + ", ".join(paths[:20])) if paths else ""
            raise ConflictError(
                f"cannot merge {source!r} into {into!r}: conflicting changes{shown}. "
                f"Resolve on {source!r} (put the wanted version and commit), then merge again ({e})"
            ) from e.__cause__
        except VersioningError as e:
            cause = e.__cause__
            if isinstance(cause, BadRequestException) and "no changes" in _detail(cause).lower():
                return self.get_commit(self.resolve(into))  # already merged: nothing to do
            raise
        return self.get_commit(commit_id)

    def _conflicting_paths(self, source: str, into: str) -> list[str]:
        """Best effort: lakeFS's three-dot diff marks both-sides changes as 'conflict'."""
        try:
            return [c.path for c in self._repo.ref(into).diff(source, max_amount=1000, type="three_dot") if c.type == "conflict"]
        except Exception:  # noqa: BLE001 - only decorates an error message
            return []

    def tag(self, name: str, ref: str) -> None:
        validate_tag_name(name)
        commit_id = self.resolve(ref)
        try:
            with self._errors(f"tag {commit_id} as {name!r}"):
                self._repo.tag(name).create(commit_id)
        except ConflictError:
            existing = self.resolve(name)
            if existing != commit_id:
                raise ConflictError(
                    f"tag {name!r} already points at {existing}; tags are immutable, so tag {commit_id} under a new name"
                ) from None

    def resolve(self, ref: str) -> str:
        if not isinstance(ref, str) or not ref:
            raise VersioningError(f"invalid ref {ref!r}: give a branch, tag or commit id")
        with self._errors(
            f"resolve {ref!r} in {self.name!r}", not_found=f"unknown ref {ref!r}: not a branch, tag or commit id"
        ):
            return self._repo.ref(ref).get_commit().id

    def log(self, ref: str, limit: int = 50) -> list[Commit]:
        if limit <= 0:
            return []
        with self._errors(f"log of {ref!r} in {self.name!r}", not_found=f"unknown ref {ref!r}"):
            return [self._to_commit(c) for c in self._repo.ref(ref).log(max_amount=limit, amount=min(limit, 1000))]

    def get_commit(self, commit_id: str) -> Commit:
        with self._errors(f"read commit {commit_id!r} of {self.name!r}", not_found=f"no commit {commit_id!r}"):
            return self._to_commit(self._repo.commit(commit_id).get_commit())
