"""Where the embedded defaults live: one folder, ``AVOPS_HOME`` (default ``.avops/``).

Keeping every output under one root makes a fresh laptop work with no configuration
and makes "start over" a single ``rm -rf``. Production profiles point the same
resources at S3/Postgres instead; the layout below is the local default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "AVOPS_HOME"
DEFAULT_HOME = ".avops"


def avops_home() -> Path:
    """The configured home folder (absolute), not created here."""
    return Path(os.environ.get(ENV_HOME, DEFAULT_HOME)).expanduser().resolve()


@dataclass(frozen=True)
class HomeLayout:
    """Named sub-folders of an avops home, so no module invents its own paths."""

    root: Path

    @property
    def landing(self) -> Path:
        """Where vehicles (or the simulator) deliver drive logs: ``<cohort>/<vehicle>/<drive>.<ext>``."""
        return self.root / "landing"

    @property
    def workshop(self) -> Path:
        """Where the workshop (dealer management) system delivers service orders: ``<cohort>/service_orders.csv``."""
        return self.root / "workshop"

    @property
    def bms(self) -> Path:
        """Where battery management systems deliver reference-test logs: ``<fleet>/<unit>/<cell>-<time>.parquet``."""
        return self.root / "bms"

    @property
    def plant(self) -> Path:
        """What manufacturing lines deliver: ``aoi/<line>/<shift>/`` (images + shift.json), ``rework/<line>/<shift>.csv``."""
        return self.root / "plant"

    @property
    def quarantine(self) -> Path:
        """Files ingest could not read, each with a ``.reason.json`` beside it."""
        return self.root / "quarantine"

    @property
    def objects(self) -> Path:
        """Content-addressed object store (``sha256/ab/cdef...``)."""
        return self.root / "objects"

    @property
    def refs(self) -> Path:
        """Mutable pointers (asset/partition -> manifest digest), replaced atomically."""
        return self.root / "refs"

    @property
    def cache(self) -> Path:
        """Derived results that can always be recomputed (per-file ingest results, ...)."""
        return self.root / "cache"

    @property
    def vehicles(self) -> Path:
        """What stays in the car: ``<cohort>/<vehicle>/cabin/`` (in-cabin frames, the vehicle's privacy ledger).

        Simulated vehicles keep their own storage here; nothing on the cloud side reads it except the
        vehicle half of the no-upload audit (a real fleet runs that half in the car)."""
        return self.root / "vehicles"

    @property
    def cabin_consented(self) -> Path:
        """Cabin sessions recorded with consent (studio sessions, test-vehicle programme): ``<cohort>/<session>.npz``."""
        return self.root / "cabin_consented"

    @property
    def sim_truth(self) -> Path:
        """Simulator ground truth: read only by tests and the simulated reviewer."""
        return self.root / "sim_truth"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or (self.root / "dagster")).resolve()


def layout(root: Path | str | None = None) -> HomeLayout:
    return HomeLayout(Path(root).resolve() if root is not None else avops_home())
