"""The embedded-default storage: an avops home folder (objects, tables, landing zone)."""


from pathlib import Path

import dagster as dg

from avops.home import HomeLayout, avops_home
from avops.store import ObjectStore


class AvopsHome(dg.ConfigurableResource):
    """Root of the local landing zone, object store, dataset refs and quarantine.

    Leave ``root`` empty to use ``$AVOPS_HOME`` (default ``.avops/`` in the working directory).
    """

    root: str = ""

    def layout(self) -> HomeLayout:
        return HomeLayout(Path(self.root).resolve() if self.root else avops_home())

    def object_store(self) -> ObjectStore:
        return ObjectStore(self.layout().objects)
