"""The embedded-default storage: an avops home folder (objects, tables, landing zone)."""


from pathlib import Path

import dagster as dg

from avops.home import HomeLayout, avops_home
from avops.store import ObjectStore, open_store


class AvopsHome(dg.ConfigurableResource):
    """Root of the local landing zone, object store, dataset refs and quarantine.

    Leave ``root`` empty to use ``$AVOPS_HOME`` (default ``.avops/`` in the working directory).
    ``AVOPS_OBJECT_STORE=s3://bucket/prefix`` puts the objects and the refs on S3 (the folder's
    ``objects/`` is then a verified cache); credentials and ``AWS_ENDPOINT_URL`` as boto3 reads them.
    """

    root: str = ""

    def layout(self) -> HomeLayout:
        return HomeLayout(Path(self.root).resolve() if self.root else avops_home())

    def object_store(self) -> ObjectStore:
        return open_store(self.layout())
