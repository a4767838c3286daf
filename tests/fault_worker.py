"""A run that the fault tests kill with SIGKILL: it writes, round after round, a maintenance checkpoint,
its gateway engine, a signed OTA package and a curated set, with the real code and the configured
stores (objects on S3, registry and audit log on Postgres). Before each write it prints what it is
about to write, so the test can kill it in the middle of exactly that.

``python -m tests.fault_worker ROOT FIRST_ROUND ROUNDS``
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pyarrow as pa


def main(root: Path, first: int, rounds: int) -> None:
    from avops.compile import pipeline as cp
    from avops.compile.socs import load_catalog
    from avops.features.tables import load_feature_table
    from avops.fleet_registry import load_registry
    from avops.home import HomeLayout
    from avops.maintenance import engines, pipeline
    from avops.maintenance.config import load_maintenance_config
    from avops.ota import packages
    from avops.registry import ModelRegistry
    from avops.store import parquet_bytes
    from avops.versioning.factory import open_repository

    home = HomeLayout(root / "home")
    fleet = load_registry(root / "fleet.yaml")
    cohort = fleet.cohorts[0]
    registry = ModelRegistry(os.environ["AVOPS_REGISTRY_URL"], audit_keys=home.root / "audit" / "keys")
    config = load_maintenance_config(root / "maintenance.yaml")
    socs = load_catalog()
    repo = open_repository("embedded", "curated-sets", home=home)
    repo.ensure()
    for i in range(first, first + rounds):
        cfg = dataclasses.replace(config, components=tuple(dataclasses.replace(c, ridge_alpha=c.ridge_alpha + i)
                                                           for c in config.components))
        print(f"writing checkpoint {i}", flush=True)
        pipeline.train(home, registry, cohort, cfg, "fault-worker")
        print(f"writing engine {i}", flush=True)
        engines.build_engines(home, registry, cohort, cfg, socs, measure_runs=5)
        print(f"writing package {i}", flush=True)
        mm, rows = cp.publish_compatibility(home, cohort, fleet.cohort_ids, socs)
        pkg = packages.build_and_publish(home, cohort, rows, cp.all_engines(home, fleet.cohort_ids), f"fault-{i}")
        packages.publish_manifest(home, pkg, mm.digest)
        print(f"writing curated set {i}", flush=True)
        _, table = load_feature_table(home, cohort.id)
        table = table.append_column("round", pa.array([i] * table.num_rows))
        repo.put("main", f"cohorts/{cohort.id}/samples.parquet", parquet_bytes(table))
        repo.put("main", f"cohorts/{cohort.id}/manifest.json", f'{{"cohort": "{cohort.id}", "round": {i}}}'.encode())
        repo.commit("main", f"round {i}", {"cohort": cohort.id})
        print(f"round {i} done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
