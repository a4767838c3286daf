"""Benchmark: one drift sensor tick for a cohort with 1M new telemetry rows (target: under 5 s).

Builds a synthetic ingested cohort (VW MQB bus: brake pressure, acceleration, speed, wheel
speeds, temperatures, pack voltage) whose rows are split between the training period and the
new period, registers a production maintenance model whose drift reference covers the first
period, then times what the sensor does per cohort (:func:`avops.drift.monitor.evaluate`:
read the new rows with DuckDB from Parquet, KS per signal against the sorted reference, BH),
side by side with the same rows tested by a ``scipy.stats.ks_2samp`` loop (p-values checked
equal). Prints one summary line last, e.g.

    drift tick 1000000 new rows x 11 signals: avops tick 1.4 s (target < 5 s), drifted 3, scipy 2.1x

``scipy`` is the tick's speedup over reading the same rows and testing them with ks_2samp.
Run: ``.venv/bin/python benchmarks/bench_drift_tick.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from scipy import stats

from avops import datasets
from avops.drift import monitor
from avops.drift.ks import Reference
from avops.drift.telemetry import telemetry_rows
from avops.features.definitions import DRIFT_SIGNALS
from avops.features.tables import platform_for
from avops.fleet_registry import Cohort, Ecu
from avops.home import HomeLayout
from avops.ingest.ingest import ASSET_KEY
from avops.maintenance import pipeline as pdm
from avops.maintenance.config import load_maintenance_config
from avops.query import connect_manifest
from avops.registry import ModelRegistry
from avops.store import ObjectStore

# message -> (share of the rows, {signal: (mean, sd, shift in sd in the new period)})
BUS = {
    "ESP_05": (0.28, {"ESP_Bremsdruck": (6.0, 5.0, 0.3)}),
    "ESP_02": (0.28, {"ESP_Laengsbeschl": (-0.8, 0.9, 0.0)}),
    "ESP_21": (0.20, {"ESP_v_Signal": (60.0, 25.0, 0.0)}),
    "ESP_19": (0.20, {s: (60.0, 25.0, 0.0) for s in ("ESP_VL_Radgeschw_02", "ESP_VR_Radgeschw_02", "ESP_HL_Radgeschw_02", "ESP_HR_Radgeschw_02")}),
    "BMS_Hybrid_01": (0.02, {"BMS_Temperatur": (22.0, 6.0, 0.8), "BMS_IstSpannung_HV": (340.0, 5.0, 0.0)}),
    "Motor_07": (0.01, {"MO_Kuehlmittel_Temp": (88.0, 6.0, 0.5), "MO_Oel_Temp": (70.0, 8.0, 0.0)}),
    "Kombi_02": (0.01, {"KBI_Aussen_Temp_gef": (12.0, 7.0, 0.9)}),
}
COHORT = Cohort("bench-my2022-eu", "vw-mqb-phev", 2022, "xavier", "eu", 3, "opendbc:vw_mqb", "PTC-MQB-22.4", ("blf",),
                (Ecu("adas_domain", "NV-XAVIER-AGX-32", "5.2.6"),))


def _tables(rng: np.random.Generator, rows: int, t0: float, t1: float, shifted: bool) -> dict[str, pa.Table]:
    out = {}
    for message, (share, signals) in BUS.items():
        n = max(1, int(rows * share))
        cols = {"drive_id": pa.array(["d"] * n), "vehicle_id": pa.array([f"v{i % 3}" for i in range(n)]),
                "timestamp": np.sort(rng.uniform(t0, t1, n))}
        for sig, (mean, sd, shift) in signals.items():
            cols[sig] = rng.normal(mean + (shift * sd if shifted else 0.0), sd, n)
        out[f"can__{message}"] = pa.table(cols)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="new telemetry rows (the reference period has as many)")
    args = ap.parse_args()
    console = Console(stderr=True)
    rng = np.random.default_rng(2026)
    with tempfile.TemporaryDirectory() as tmp:
        home = HomeLayout(Path(tmp))
        store = ObjectStore(home.objects)
        cutoff = 1_780_000_000.0
        old, new = _tables(rng, args.rows, cutoff - 86400 * 90, cutoff, False), _tables(rng, args.rows, cutoff + 1, cutoff + 86400 * 30, True)
        merged = {k: pa.concat_tables([old[k], new[k]]) for k in old}
        raw = datasets.publish(store, home.refs, ASSET_KEY, COHORT.id, merged, {})
        con = connect_manifest(store, raw)
        reference = Reference.build(telemetry_rows(con, platform_for(COHORT), DRIFT_SIGNALS, until=cutoff))  # at training time, untimed
        ref_sha = store.put_bytes(reference.to_bytes())
        ckpt = store.put_json({"model": pdm.MODEL, "trained_until": cutoff, "components": {}, "reference_sha256": ref_sha})
        reg = ModelRegistry.local(home)
        v = reg.register(pdm.MODEL, COHORT.id, ckpt, {}, {}, "bench")
        reg.transition(pdm.MODEL, v.version, "validated", "bench", "bench")
        reg.transition(pdm.MODEL, v.version, "released", "bench", "bench")
        reg.set_alias(pdm.MODEL, COHORT.id, pdm.PRODUCTION, v.version, "bench", "bench")
        config = load_maintenance_config()

        ticks = []
        for _ in range(3):
            t0 = time.perf_counter()
            verdict = monitor.evaluate(home, reg, COHORT, config)
            ticks.append(time.perf_counter() - t0)
        tick = float(np.median(ticks))
        n_new = sum(verdict.current_rows.values())
        console.print(f"avops tick: {tick:.2f} s (median of 3), {n_new} new signal values, drifted {verdict.drifted}")

        t0 = time.perf_counter()
        current = telemetry_rows(connect_manifest(store, raw), platform_for(COHORT), DRIFT_SIGNALS, after=cutoff)
        theirs = {c: stats.ks_2samp(reference.values[c], current[c]) for c in reference.columns if c in current and current[c].size}
        scipy_s = time.perf_counter() - t0
        console.print(f"read + scipy ks_2samp loop: {scipy_s:.2f} s")
        for c in verdict.columns:
            t = theirs.get(c.column)
            if t is not None and (c.statistic != t.statistic or not np.isclose(c.pvalue, t.pvalue, rtol=1e-9, atol=0)):
                console.print(f"[red]{c.column}: avops D={c.statistic} p={c.pvalue}, scipy D={t.statistic} p={t.pvalue}[/]")
                return 1
    ok = "met" if tick < 5 else "MISSED"
    print(f"drift tick {args.rows} new rows x {len(verdict.columns)} signals: avops tick {tick:.2f} s (target < 5 s, {ok}), "
          f"drifted {len(verdict.drifted)}, scipy {scipy_s / tick:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
