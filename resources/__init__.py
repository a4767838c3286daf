"""Dagster resources: where avops stores things and what it reads its configuration from."""

from resources.fleet import FleetRegistryResource
from resources.review import ReviewTeam
from resources.storage import AvopsHome
from resources.versioning import DatasetVersioning

__all__ = ["AvopsHome", "DatasetVersioning", "FleetRegistryResource", "ReviewTeam"]
