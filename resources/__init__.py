"""Dagster resources: where avops stores things and what it reads its configuration from."""

from resources.fleet import FleetRegistryResource
from resources.lines import LineRegistryResource
from resources.model_registry import ModelRegistryResource
from resources.review import ReviewTeam
from resources.storage import AvopsHome
from resources.versioning import DatasetVersioning

__all__ = ["AvopsHome", "DatasetVersioning", "FleetRegistryResource", "LineRegistryResource", "ModelRegistryResource", "ReviewTeam"]
