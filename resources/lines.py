"""The manufacturing line registry (``config/lines.yaml``, or ``AVOPS_LINES``)."""

import dagster as dg

from avops.manufacturing.lines import LineRegistry, load_lines


class LineRegistryResource(dg.ConfigurableResource):
    """Where the line registry lives; empty means ``$AVOPS_LINES`` or ``config/lines.yaml``."""

    path: str = ""

    def load(self) -> LineRegistry:
        return load_lines(self.path or None)
