"""The dataset-versioning contract shared by the embedded and the lakeFS backends.

Training reads a *commit id*, never a branch, so a model can always be traced back
to the exact bytes it saw. Both backends implement :class:`DatasetRepository` and are
checked by one contract test suite, so switching ``backend=`` changes where data lives,
not what the pipeline can rely on.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

DEFAULT_BRANCH = "main"

# The strictest of both backends, so a name that works on one works on the other
# (lakeFS: repositories ``[a-z0-9][a-z0-9-]{2,62}``, branches ``\w[-\w]*``).
REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")
TAG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Commit:
    """One immutable dataset version; ``created_at`` is ISO-8601 UTC."""

    id: str
    parents: tuple[str, ...]
    message: str
    metadata: dict[str, str] = field(hash=False)
    created_at: str


class VersioningError(RuntimeError):
    """A versioning operation failed; the message says what is wrong and what to do."""


class ConflictError(VersioningError):
    """Merge conflicts, an existing branch, or re-pointing an immutable tag."""


def iso_utc(when: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix, the one timestamp format both backends report."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def validate_path(path: str) -> str:
    """Reject paths that could escape the dataset (``..``, absolute, empty segments)."""
    if not isinstance(path, str) or not path:
        raise VersioningError(f"invalid object path {path!r}: use a non-empty relative path like 'train/part-0.parquet'")
    if path.startswith("/"):
        raise VersioningError(f"invalid object path {path!r}: paths are relative to the dataset root; drop the leading '/'")
    if "\\" in path or "\x00" in path:
        raise VersioningError(f"invalid object path {path!r}: use '/' as separator and no NUL bytes")
    parts = path.split("/")
    if ".." in parts:
        raise VersioningError(f"invalid object path {path!r}: '..' segments are not allowed")
    if any(p in ("", ".") for p in parts):
        raise VersioningError(f"invalid object path {path!r}: empty or '.' segments are not allowed (no '//', './' or trailing '/')")
    return path


def validate_prefix(prefix: str) -> str:
    """A listing prefix may be empty or end in '/', but must not escape the dataset either."""
    if prefix:
        validate_path(prefix.rstrip("/") or "/")
    return prefix


def validate_repository_name(name: str) -> str:
    if not isinstance(name, str) or not REPOSITORY_NAME.match(name):
        raise VersioningError(
            f"invalid repository name {name!r}: use 3-63 lowercase letters, digits and '-', starting with a letter or digit"
        )
    return name


def validate_branch_name(name: str) -> str:
    if not isinstance(name, str) or not BRANCH_NAME.match(name):
        raise VersioningError(f"invalid branch name {name!r}: use letters, digits, '_' and '-' (no '/', '.' or spaces)")
    return name


def validate_tag_name(name: str) -> str:
    if not isinstance(name, str) or not TAG_NAME.match(name):
        raise VersioningError(f"invalid tag name {name!r}: use letters, digits, '_', '.' and '-'")
    return name


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Metadata must be str -> str so it round-trips through lakeFS unchanged."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise VersioningError(f"commit metadata must be a dict of str -> str, got {type(metadata).__name__}")
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise VersioningError(f"commit metadata values must be strings; convert these keys' values with str(): {sorted(map(str, bad))}")
    return dict(metadata)


class DatasetRepository(ABC):
    """One versioned dataset repository (e.g. ``curated-sets``) with a ``main`` branch.

    Refs: a branch name (reads include its staged, uncommitted changes), a tag, or a
    full commit id. Writes are staged on a branch with :meth:`put` and become a
    version only with :meth:`commit`.
    """

    name: str

    @abstractmethod
    def ensure(self) -> None:
        """Create the repository with a ``main`` branch if it is missing (idempotent)."""

    @abstractmethod
    def create_branch(self, name: str, source: str = DEFAULT_BRANCH) -> None:
        """Branch from a branch, tag or commit id; an existing name raises ConflictError."""

    @abstractmethod
    def delete_branch(self, name: str) -> None:
        """Delete a branch and its staged changes (commits stay reachable by id)."""

    @abstractmethod
    def branches(self) -> dict[str, str]:
        """Branch name -> head commit id."""

    @abstractmethod
    def put(self, branch: str, path: str, data: bytes) -> str:
        """Stage an object on a branch (uncommitted); returns its sha256."""

    @abstractmethod
    def get(self, ref: str, path: str) -> bytes:
        """Object bytes at a ref; a missing object raises VersioningError naming ref and path."""

    @abstractmethod
    def list(self, ref: str, prefix: str = "") -> dict[str, str]:
        """Path -> sha256 of every object under ``prefix`` at a ref."""

    @abstractmethod
    def commit(self, branch: str, message: str, metadata: dict[str, str]) -> Commit:
        """Turn a branch's staged changes into a commit; nothing staged raises VersioningError."""

    @abstractmethod
    def merge(
        self, source: str, into: str = DEFAULT_BRANCH, message: str = "", metadata: dict[str, str] | None = None
    ) -> Commit:
        """Merge a ref into a branch and return the branch's new head commit."""

    @abstractmethod
    def tag(self, name: str, ref: str) -> None:
        """Tag a commit; tags are immutable, so re-tagging a different commit raises ConflictError."""

    @abstractmethod
    def resolve(self, ref: str) -> str:
        """The commit id a branch, tag or commit id points to."""

    @abstractmethod
    def log(self, ref: str, limit: int = 50) -> list[Commit]:
        """History reachable from ref, newest first."""

    @abstractmethod
    def get_commit(self, commit_id: str) -> Commit:
        """One commit by id."""
