"""Dataset versioning as a Dagster resource: assets get a repository, configuration picks the backend."""

from pathlib import Path

import dagster as dg

from avops.home import HomeLayout, avops_home
from avops.versioning.base import DatasetRepository
from avops.versioning.factory import open_repository


class DatasetVersioning(dg.ConfigurableResource):
    """Versioned curated datasets; training reads a commit id from here.

    ``backend="embedded"`` (default) needs no server and stores everything under the avops
    home (``home`` overrides ``$AVOPS_HOME``). ``backend="lakefs"`` talks to a lakeFS
    server; leave its settings empty to read ``LAKEFS_ENDPOINT``, ``LAKEFS_ACCESS_KEY_ID``,
    ``LAKEFS_SECRET_ACCESS_KEY`` (and optionally ``LAKEFS_STORAGE_NAMESPACE``), or pass
    ``dg.EnvVar(...)`` so secrets never land in run config.
    """

    backend: str = "embedded"
    repository: str = "curated-sets"
    home: str = ""
    lakefs_endpoint: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    storage_namespace: str = ""

    def layout(self) -> HomeLayout:
        return HomeLayout(Path(self.home).resolve() if self.home else avops_home())

    def open(self) -> DatasetRepository:
        """The configured repository, created if missing (``ensure`` is idempotent and cheap)."""
        repo = open_repository(
            self.backend,
            self.repository,
            home=self.layout(),
            lakefs_endpoint=self.lakefs_endpoint or None,
            access_key_id=self.access_key_id or None,
            secret_access_key=self.secret_access_key or None,
            storage_namespace=self.storage_namespace or None,
        )
        repo.ensure()
        return repo
