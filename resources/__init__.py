"""Dagster resources: where avops stores things and what it reads its configuration from."""

from resources.fleet import FleetRegistryResource
from resources.storage import AvopsHome

__all__ = ["AvopsHome", "FleetRegistryResource"]
