"""Atomic writes and the content-addressed object store.

Every artifact is immutable and named by its sha256, so lineage can be verified by
recomputing digests, and a crash never leaves a half-written file where a reader
can see it (write to a temporary file in the same folder, fsync, then rename).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_writer(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """Yield a file handle whose content appears at ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: Path | str, obj: object) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


class ObjectStore:
    """A local content-addressed store: ``root/sha256/ab/cdef...``.

    ``put`` is idempotent (same bytes, same name) and safe under concurrent writers,
    since the final rename of identical content is harmless.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.root / "sha256" / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        target = self.path(digest)
        if not target.exists():
            atomic_write_bytes(target, data)
        return digest

    def put_file(self, src: Path | str) -> str:
        """Copy a file in (streaming the hash); the source is left untouched."""
        digest = sha256_file(src)
        target = self.path(digest)
        if not target.exists():
            with atomic_writer(target) as out, open(src, "rb") as f:
                shutil.copyfileobj(f, out, CHUNK)
        return digest

    def get_bytes(self, digest: str, verify: bool = False) -> bytes:
        data = self.path(digest).read_bytes()
        if verify and sha256_bytes(data) != digest:
            raise IntegrityError(f"object {digest} is corrupted: its content hashes to {sha256_bytes(data)}")
        return data

    def verify(self, digest: str) -> bool:
        return sha256_file(self.path(digest)) == digest

    def put_json(self, obj: object) -> str:
        return self.put_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def get_json(self, digest: str) -> object:
        return json.loads(self.get_bytes(digest))

    def location(self, digest: str) -> str:
        """Where the object lives, for people (a path here, an ``s3://`` URL on S3)."""
        return str(self.path(digest))

    def register_table(self, con, name: str, digest: str) -> None:
        """Make the stored Parquet object queryable as ``name`` in a DuckDB connection."""
        path = str(self.path(digest)).replace("'", "''")
        con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet('{path}')")

    # Refs: the only mutable pointers (``key[partition]`` -> current manifest). They live beside the
    # objects: in a folder here, in the bucket for :class:`avops.s3store.S3ObjectStore`.
    def read_ref(self, refs_root: Path, key: str, partition: str) -> dict | None:
        p = Path(refs_root) / key / f"{partition}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def write_ref(self, refs_root: Path, key: str, partition: str, ref: dict) -> None:
        atomic_write_json(Path(refs_root) / key / f"{partition}.json", ref)


ENV_OBJECT_STORE = "AVOPS_OBJECT_STORE"


def open_store(home) -> ObjectStore:
    """The object store configuration selects: local under ``AVOPS_HOME`` (default) or ``s3://bucket/prefix``.

    With S3 the home's ``objects/`` folder is a verified read-through cache of immutable objects.
    """
    url = os.environ.get(ENV_OBJECT_STORE, "").strip()
    if not url or url == "local":
        return ObjectStore(home.objects)
    if url.startswith("s3://"):
        from avops.s3store import S3ObjectStore

        return S3ObjectStore(url, home.objects)
    raise ValueError(f"{ENV_OBJECT_STORE}={url!r}: expected s3://bucket[/prefix], or unset for the local store under AVOPS_HOME")


class IntegrityError(RuntimeError):
    """Stored bytes no longer match the digest they are named by."""


def parquet_bytes(table) -> bytes:
    """Serialize an Arrow table to Parquet bytes deterministically (for content addressing)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()
