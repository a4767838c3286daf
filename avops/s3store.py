"""The content-addressed object store and the refs on S3 (or any S3-compatible server).

S3 is the source of truth; the home folder's ``objects/`` becomes a read-through cache. Objects
are immutable and named by their sha256, so a cached copy never goes stale: it is fetched once,
its digest is checked, and it is renamed into place atomically. Writes are conditional
(``If-None-Match: *``): an object, once written, is never overwritten, and a concurrent writer of
the same digest finds it there (412) and moves on. Refs (the only mutable pointers) are small
JSON objects replaced in one PUT, which S3 makes visible atomically.

Tables are read through pyarrow's S3 filesystem (DuckDB queries them through Arrow: its httpfs
extension needs a download at ``INSTALL`` time). Configuration: ``AVOPS_OBJECT_STORE=s3://bucket/prefix``,
credentials and ``AWS_ENDPOINT_URL`` / ``AWS_REGION`` the way boto3 reads them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlparse

from avops.store import IntegrityError, ObjectStore, atomic_write_bytes, sha256_bytes

ENV_STORE = "AVOPS_OBJECT_STORE"


@functools.lru_cache(maxsize=None)
def _client(endpoint: str | None):
    """One boto3 client per endpoint and process (they are thread-safe; creating one costs tens of ms)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint,
                        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60))


class ObjectStoreUnavailable(RuntimeError):
    """The S3 endpoint cannot be reached or refused the request; nothing was half-written."""


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("404", "NoSuchKey", "NotFound")


class S3ObjectStore(ObjectStore):
    """``s3://bucket/prefix/sha256/ab/cdef…`` with a verified local cache at ``cache_root``."""

    def __init__(self, url: str, cache_root: Path | str, client=None) -> None:
        super().__init__(cache_root)
        u = urlparse(url)
        if u.scheme != "s3" or not u.netloc:
            raise ValueError(f"{ENV_STORE}={url!r}: expected s3://bucket[/prefix]")
        self.url, self.bucket, self.prefix = url, u.netloc, u.path.strip("/")
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = client or _client(self.endpoint)
        self._fs = None

    def location(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self.key(digest)}"

    # -- keys ---------------------------------------------------------------------------------
    def key(self, digest: str) -> str:
        local = super().path(digest)  # validates the digest
        rel = local.relative_to(self.root).as_posix()
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _ref_key(self, key: str, partition: str) -> str:
        rel = f"refs/{key}/{partition}.json"
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _call(self, what: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError:
            raise
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"S3 {self.endpoint or 'endpoint'} unreachable while {what} (s3://{self.bucket}/"
                                         f"{self.prefix}): {exc}. Nothing was half-written; retry once it is back") from exc

    # -- objects ------------------------------------------------------------------------------
    def has(self, digest: str) -> bool:
        if super().path(digest).exists():
            return True
        from botocore.exceptions import ClientError

        try:
            self._call(f"looking up {digest[:12]}", self.client.head_object, Bucket=self.bucket, Key=self.key(digest))
            return True
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        self._put(digest, data)
        local = super().path(digest)
        if not local.exists():
            atomic_write_bytes(local, data)
        return digest

    def _put(self, digest: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        checksum = base64.b64encode(bytes.fromhex(digest)).decode()
        try:
            self._call(f"writing {digest[:12]}", self.client.put_object, Bucket=self.bucket, Key=self.key(digest), Body=data,
                       IfNoneMatch="*", ChecksumSHA256=checksum)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return  # already there: content addressing makes it the same bytes
            raise

    def put_file(self, src: Path | str) -> str:
        return self.put_bytes(Path(src).read_bytes())

    def path(self, digest: str) -> Path:
        """A local, verified copy (fetched into the cache once; objects never change)."""
        local = super().path(digest)
        if not local.exists():
            data = self._fetch(digest)
            if sha256_bytes(data) != digest:
                raise IntegrityError(f"s3://{self.bucket}/{self.key(digest)} hashes to {sha256_bytes(data)}, not {digest}: "
                                     "the object was changed in the bucket")
            atomic_write_bytes(local, data)
        return local

    def _fetch(self, digest: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            body = self._call(f"reading {digest[:12]}", self.client.get_object, Bucket=self.bucket, Key=self.key(digest))["Body"]
            return body.read()
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"s3://{self.bucket}/{self.key(digest)}: no such object") from exc
            raise

    def get_bytes(self, digest: str, verify: bool = False) -> bytes:
        return self.path(digest).read_bytes()  # the cache only ever holds verified copies

    def verify(self, digest: str) -> bool:
        """Hash what the bucket holds now (not the cache)."""
        try:
            return hashlib.sha256(self._fetch(digest)).hexdigest() == digest
        except FileNotFoundError:
            return False

    # -- refs ---------------------------------------------------------------------------------
    def read_ref(self, refs_root: Path, key: str, partition: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            obj = self._call(f"reading ref {key}[{partition}]", self.client.get_object, Bucket=self.bucket,
                             Key=self._ref_key(key, partition))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return json.loads(obj["Body"].read())

    def write_ref(self, refs_root: Path, key: str, partition: str, ref: dict) -> None:
        self._call(f"moving ref {key}[{partition}]", self.client.put_object, Bucket=self.bucket, Key=self._ref_key(key, partition),
                   Body=json.dumps(ref, sort_keys=True).encode(), ContentType="application/json")

    # -- tables through Arrow -------------------------------------------------------------------
    @property
    def filesystem(self):
        """pyarrow's S3 filesystem over the same bucket (what DuckDB reads tables through)."""
        if self._fs is None:
            from pyarrow import fs

            import boto3

            creds = boto3.Session().get_credentials()  # the same chain (environment, profile, role) the client used
            frozen = creds.get_frozen_credentials() if creds is not None else None
            endpoint = urlparse(self.endpoint) if self.endpoint else None
            self._fs = fs.S3FileSystem(
                access_key=frozen.access_key if frozen else None, secret_key=frozen.secret_key if frozen else None,
                session_token=frozen.token if frozen else None, region=self.client.meta.region_name or "us-east-1",
                endpoint_override=endpoint.netloc if endpoint else None, scheme=endpoint.scheme if endpoint else "https",
                connect_timeout=5, request_timeout=60)
        return self._fs

    def register_table(self, con, name: str, digest: str) -> None:
        """A DuckDB view of the stored Parquet read through pyarrow's S3 filesystem (DuckDB's httpfs needs a download)."""
        import pyarrow.dataset as ds

        con.register(name, ds.dataset(f"{self.bucket}/{self.key(digest)}", filesystem=self.filesystem, format="parquet"))
