"""Pick a dataset-versioning backend by name, so configuration (not code) decides where versions live."""

from __future__ import annotations

import os
from pathlib import Path

from avops.home import HomeLayout
from avops.store import open_store
from avops.versioning.base import DatasetRepository, VersioningError

BACKENDS = ("embedded", "lakefs")
ENV_ENDPOINT = "LAKEFS_ENDPOINT"
ENV_ACCESS_KEY_ID = "LAKEFS_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "LAKEFS_SECRET_ACCESS_KEY"
ENV_STORAGE_NAMESPACE = "LAKEFS_STORAGE_NAMESPACE"


def embedded_root(home: HomeLayout) -> Path:
    """Where embedded repositories keep their refs: beside the other mutable pointers."""
    return home.refs / "versioning"


def open_repository(
    backend: str,
    name: str,
    *,
    home: HomeLayout,
    lakefs_endpoint: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    storage_namespace: str | None = None,
) -> DatasetRepository:
    """Open (not create: call ``ensure()``) a dataset repository.

    lakeFS settings not passed explicitly are read from ``LAKEFS_*`` environment variables,
    so secrets can stay out of config files. Embedded repositories share the home's
    object store, so dataset bytes are stored once however many versions reference them.
    """
    kind = (backend or "").strip().lower()
    if kind == "embedded":
        from avops.versioning.embedded import EmbeddedRepository

        return EmbeddedRepository(embedded_root(home), name, open_store(home))
    if kind == "lakefs":
        endpoint = lakefs_endpoint or os.environ.get(ENV_ENDPOINT, "")
        key = access_key_id or os.environ.get(ENV_ACCESS_KEY_ID, "")
        secret = secret_access_key or os.environ.get(ENV_SECRET_ACCESS_KEY, "")
        missing = [env for env, value in ((ENV_ENDPOINT, endpoint), (ENV_ACCESS_KEY_ID, key), (ENV_SECRET_ACCESS_KEY, secret)) if not value]
        if missing:
            raise VersioningError(
                f"lakeFS backend is missing {', '.join(missing)}: set LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID, "
                "LAKEFS_SECRET_ACCESS_KEY (or pass them in the resource config), or use backend='embedded'"
            )
        from avops.versioning.lakefs_backend import LakeFSRepository

        namespace = storage_namespace or os.environ.get(ENV_STORAGE_NAMESPACE) or None
        return LakeFSRepository(name, endpoint, key, secret, storage_namespace=namespace)
    raise VersioningError(f"unknown versioning backend {backend!r}: choose one of {', '.join(BACKENDS)}")
