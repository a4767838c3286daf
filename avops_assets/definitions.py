"""The avops code location: every asset, check, sensor and resource, assembled once."""


from pathlib import Path

import dagster as dg
from dagster.components import load_from_defs_folder

from avops_assets.partitions import cohort_partitions
from resources import AvopsHome, FleetRegistryResource
from sensors import landing_zone_sensor

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB = "avops_main"

# The main job: the whole asset graph (with its checks) for one cohort.
main_job = dg.define_asset_job(MAIN_JOB, selection=dg.AssetSelection.all(), partitions_def=cohort_partitions)


def resources() -> dict[str, dg.ConfigurableResource]:
    """Embedded defaults; a deployment overrides them through environment variables."""
    return {"avops_home": AvopsHome(), "fleet": FleetRegistryResource()}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        load_from_defs_folder(project_root=PROJECT_ROOT),
        dg.Definitions(resources=resources(), sensors=[landing_zone_sensor], jobs=[main_job]),
    )
