"""Benchmark: battery features of a reference test online (one test, as the BMS) vs offline (a fleet's batch).

Both come from the one definition (``avops.battery.features``):

* online: ``online_features`` on one cell's latest reference test and the small state its BMS keeps
  (float64), and the float32 port reference ``avops.battery.bms_reference`` on the same test;
  median over ``--runs`` single calls;
* offline: ``offline_features`` over every test of every ingested fleet, divided by the number of
  tests; median over ``--rounds`` batches.

Before any time is printed, every test is recomputed online (float64) and compared with the
offline table (``|online - offline| <= 1e-8 * max(|offline|, 1)``, the bound of
``avops.battery.pipeline.verify_parity``), and the float32 reference is
checked against the fleet's golden vectors (within float32 tolerances); exit 1 otherwise.

Data: the ingested fleets of ``--home`` (default: a scratch AVOPS home in the temp folder); if it
has none, one small stationary fleet (``ess-nmc-tx``: 3 storage units, 11 reference tests each,
PyBaMM, about 10 s) is simulated and ingested there first. Prints one summary line last, e.g.

    battery features (1980 tests in the batch, 1 fleet): online 150 µs/test, float32 reference 130 µs/test, offline batch 40.0 µs/test; batch speedup per cell vs online 3.7x

The batch is timed at fleet scale (``--fleet-tests``, default about 2,000 tests: the fleets' tests
replicated as further cells). The last figure is online per-test time / offline per-test time:
how much cheaper one test is in the cloud's batch than computed alone, as the BMS does.
Run: ``.venv/bin/python benchmarks/bench_battery_features.py [--home DIR] [--runs N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from avops.battery import bms_reference
from avops.battery.config import load_battery_config
from avops.battery.features import (FEATURE_NAMES, CellState, fit_embedding, offline_features, online_features, q_grids_offline,
                                    spec_for)
from avops.battery.golden import check_against_golden, golden_vectors
from avops.battery.ingest import ingest_fleet, load_reference_tests
from avops.home import layout

SIMULATED_FLEET = "ess-nmc-tx"
PARITY_REL = 1e-8  # avops.battery.pipeline.verify_parity's default


def _replicate(tests, samples, copies: int):
    """``copies`` renamed copies of a fleet's tests and samples (cells ``<id>~k``): a larger fleet of the same tests."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if copies == 1:
        return tests, samples
    ts, ss = [], []
    for k in range(copies):
        suffix = f"~{k}"
        ts.append(tests.set_column(tests.schema.get_field_index("test_id"), "test_id", pc.binary_join_element_wise(tests["test_id"], suffix, ""))
                  .set_column(tests.schema.get_field_index("cell_id"), "cell_id", pc.binary_join_element_wise(tests["cell_id"], suffix, "")))
        ss.append(samples.set_column(samples.schema.get_field_index("test_id"), "test_id",
                                     pc.binary_join_element_wise(samples["test_id"], suffix, "")))
    # as ingest writes them: one table, tests in (cell, start) order, samples grouped by test in that order
    t = pa.concat_tables(ts).sort_by([("cell_id", "ascending"), ("started_at", "ascending")]).combine_chunks()
    s = pa.concat_tables(ss).combine_chunks()
    rank = {tid: k for k, tid in enumerate(t["test_id"].to_pylist())}
    import numpy as np

    order = np.argsort(np.array([rank[x] for x in s["test_id"].to_pylist()]), kind="stable")
    return t, s.take(pa.array(order))


def fleets_in(home, config) -> dict:
    out = {}
    for fid in config.fleets:
        try:
            _, tests, samples = load_reference_tests(home, fid)
        except LookupError:
            continue
        out[fid] = (tests, samples)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=str(Path(tempfile.gettempdir()) / "avops-bench-battery"),
                    help="AVOPS home with ingested BMS reference tests (simulated there if it has none)")
    ap.add_argument("--runs", type=int, default=2000, help="single online calls timed")
    ap.add_argument("--rounds", type=int, default=10, help="offline batches timed")
    ap.add_argument("--fleet-tests", type=int, default=2000,
                    help="the batch is timed at fleet scale: the fleets' tests replicated (as other cells) to about this many")
    args = ap.parse_args()
    console = Console(stderr=True)
    config = load_battery_config()
    home = layout(args.home)
    fleets = fleets_in(home, config)
    if not fleets:
        from avops.fleet.battery import simulate_batteries
        from avops.fleet_registry import load_registry

        console.print(f"no ingested battery fleet under {home.root}: simulating {SIMULATED_FLEET} (PyBaMM) ...")
        t0 = time.perf_counter()
        simulate_batteries(config, load_registry(), home, fleets=[SIMULATED_FLEET], workers=2)
        ingest_fleet(home, config, SIMULATED_FLEET)
        console.print(f"simulated and ingested in {time.perf_counter() - t0:.1f} s")
        fleets = fleets_in(home, config)

    specs, worst, n_tests, golden_ok = {}, 0.0, 0, []
    online_case = None  # (cell, arrays, state before, spec): the first fleet's first cell's latest test
    first_fleet = next(iter(fleets))
    for fid, (tests, samples) in fleets.items():
        chem = config.chemistry_of(fid)
        bare = spec_for(chem)
        spec = specs[fid] = spec_for(chem, fit_embedding(q_grids_offline(tests, samples, bare), bare))
        # parity: every test online (cell by cell, in order, keeping only the BMS state) vs the offline batch
        off = {r["test_id"]: r for r in offline_features(tests, samples, spec).to_pylist()}
        s = samples.to_pandas()
        by_test = {k: g.sort_values("time_s") for k, g in s.groupby("test_id")}
        states: dict[str, CellState] = {}
        for row in tests.sort_by([("cell_id", "ascending"), ("started_at", "ascending")]).to_pylist():
            d = by_test[row["test_id"]]
            arrays = (d.time_s.to_numpy(), d.current_a.to_numpy(), d.voltage_v.to_numpy(), d.temperature_c.to_numpy(),
                      d.step.to_numpy(), float(row["usage_cycles"]))
            state = states.setdefault(row["cell_id"], CellState())
            before = copy.deepcopy(state)
            on = online_features(*arrays, state, spec)
            for name in FEATURE_NAMES:
                a, b = on[name], off[row["test_id"]][name]
                if not (math.isnan(a) and math.isnan(b)):
                    worst = max(worst, abs(a - b) / max(abs(b), 1.0) if math.isfinite(a - b) else math.inf)
            if online_case is None or (fid == first_fleet and row["cell_id"] == online_case[0]):
                online_case = (row["cell_id"], arrays, before, spec)
            n_tests += 1
        report = check_against_golden(golden_vectors(tests, samples, spec), bms_reference.online_features)
        golden_ok.append(report.ok)
        if not report.ok:
            console.print(f"[red]{fid}: the float32 reference fails its golden vectors[/]\n{report.summary()}")
    if not worst <= PARITY_REL:
        console.print(f"[red]offline and online differ: max relative difference {worst:.3g} > {PARITY_REL}[/]")
        return 1
    if not all(golden_ok):
        return 1
    console.print(f"parity: {n_tests} tests, max relative difference offline vs online {worst:.2g}; float32 reference within "
                  f"its golden-vector tolerances")

    def per_call(fn, spec) -> float:
        _, arrays, before, _ = online_case
        states = [CellState(before.first_window_charge_ah, list(before.history)) for _ in range(args.runs)]
        times = []
        for st in states:
            t0 = time.perf_counter_ns()
            fn(*arrays, st, spec)
            times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1e3

    spec = online_case[3]
    for _ in range(50):  # warm-up
        online_features(*online_case[1], CellState(), spec)
        bms_reference.online_features(*online_case[1], CellState(), spec)
    online_us = per_call(online_features, spec)
    ref_us = per_call(bms_reference.online_features, spec)
    console.print(f"online (float64): {online_us:.0f} µs/test; float32 reference: {ref_us:.0f} µs/test "
                  f"(median of {args.runs}, {online_case[0]}'s latest test)")
    # fleet scale: the same tests as further cells (renamed), so the batch's per-test cost is that of a real fleet's
    copies = max(1, round(args.fleet_tests / n_tests))
    scaled = {fid: _replicate(tests, samples, copies) for fid, (tests, samples) in fleets.items()}
    batch = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for fid, (tests, samples) in scaled.items():
            offline_features(tests, samples, specs[fid])
        batch.append(time.perf_counter() - t0)
    n_batch = n_tests * copies
    offline_us = statistics.median(batch) / n_batch * 1e6
    console.print(f"offline batch: {statistics.median(batch) * 1e3:.1f} ms for {n_batch} tests ({n_tests} x {copies}; median of {args.rounds})")
    print(f"battery features ({n_batch} tests in the batch, {len(fleets)} fleet{'s' if len(fleets) != 1 else ''}): online "
          f"{online_us:.0f} µs/test, float32 reference {ref_us:.0f} µs/test, offline batch {offline_us:.1f} µs/test; "
          f"batch speedup per cell vs online {online_us / offline_us:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
