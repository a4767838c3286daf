"""The fleet registry (cohorts, SoCs, DBCs) as a resource, so deployments can point at their own file."""


import dagster as dg

from avops.fleet_registry import FleetRegistry, load_registry


class FleetRegistryResource(dg.ConfigurableResource):
    """Leave ``path`` empty to use ``$AVOPS_FLEET_REGISTRY`` or the project's ``config/fleet.yaml``."""

    path: str = ""

    def load(self) -> FleetRegistry:
        return load_registry(self.path or None)
