"""avops: the domain library of the avops MLOps platform for automotive AI.

Everything here works without Dagster: formats, the fleet simulator, ingest, and
(later) labeling, training, compile, OTA and audit. The Dagster wiring lives in
``avops_assets``, ``resources`` and ``sensors`` and only calls into this package.
"""

__version__ = "0.1.0"
