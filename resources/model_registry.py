"""The model registry as a resource, so deployments can swap the local SQLite file for Postgres."""

from pathlib import Path

import dagster as dg

from avops.home import HomeLayout, avops_home
from avops.registry import ModelRegistry


class ModelRegistryResource(dg.ConfigurableResource):
    """SQLite in AVOPS_HOME by default; a postgresql:// URL by configuration. Every change is also audit-logged."""

    url: str = ""
    home: str = ""

    def open(self) -> ModelRegistry:
        """A registry handle; it opens a connection per call, so it is safe to use from any op or process."""
        home = HomeLayout(Path(self.home).resolve() if self.home else avops_home())
        if self.url:  # the audit log lives in the same database; its signing key stays with the home (or a KMS by URI)
            return ModelRegistry(self.url, audit_keys=home.root / "audit" / "keys")
        return ModelRegistry.local(home)
