"""Benchmark: ONNX Runtime INT8 (static QDQ) against FP32 for the demo perception model.

Takes the newest validated perception checkpoint in ``$AVOPS_HOME`` (run ``make demo`` first),
exports it, builds the graph-optimized FP32 engine and the INT8 engine calibrated on the
curated set's calibration split, then, in one process and alternating rounds:

* latency at batch 1 and batch 32 (one intra-op thread, median of many runs per round, median of rounds);
* recall per safety slice on the test split for both engines (the worst INT8 drop against FP32).

Prints one summary line last, e.g.

    engines perception v3 xavier-my2022-eu: fp32 0.281 ms, int8 0.179 ms (batch 1), worst slice drop 0.020 (urban), fp32 1.57x

The last figure is the INT8 speedup (FP32 latency / INT8 latency at batch 1). Target: INT8 <= 0.5x
FP32 latency (2.0x) with <= 0.01 drop on every slice.
Run: ``.venv/bin/python benchmarks/bench_engines.py [--rounds R] [--runs N]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

from avops.compile import backends
from avops.compile.export import export_onnx
from avops.compile.pipeline import calibration_frames
from avops.home import layout
from avops.registry import ModelRegistry
from avops.store import ObjectStore, sha256_bytes
from avops.training.checkpoints import load_checkpoint
from avops.training.data import load_images, load_training_set
from avops.training.evaluation import evaluate_on
from avops.training.gates import load_gate_policy
from avops.versioning.factory import open_repository


def _latency(sess, x: np.ndarray, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"images": x})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()

    home = layout()
    reg = ModelRegistry.local(home)
    validated = [v for v in reg.list("perception") if v.stage in ("validated", "released")]
    if not validated:
        print(f"no validated perception checkpoint in {home.root}: run `make demo` first", file=sys.stderr)
        return 2
    v = max(validated, key=lambda v: v.version)
    store = ObjectStore(home.objects)
    repo = open_repository("embedded", "curated-sets", home=home)
    data = load_training_set(repo, v.lineage["dataset_commit"], v.cohort)
    policy = load_gate_policy()
    model = load_checkpoint(store, v.artifact_sha256)
    onnx_bytes = export_onnx(model, 17)
    calib = calibration_frames(data)
    calib_x = load_images(store, list(calib["object_sha256"])).astype(np.float32)
    fp32 = backends.build_ort_fp32(onnx_bytes, "x86-ecu")
    int8 = backends.build_ort_int8(onnx_bytes, "x86-ecu", calib_x, sha256_bytes(b"".join(sorted(calib["object_sha256"].str.encode("ascii")))))
    runners = {"fp32": backends.OrtEngineDetector(fp32.data, threads=1), "int8": backends.OrtEngineDetector(int8.data, threads=1)}

    test = data.split("test")
    x1 = load_images(store, list(test["object_sha256"][:1])).astype(np.float32)
    x32 = load_images(store, list(test["object_sha256"][:32])).astype(np.float32)
    lat: dict[tuple[str, int], list[float]] = {(k, b): [] for k in runners for b in (1, 32)}
    for name, r in runners.items():  # warm up
        _latency(r.session, x1, 10)
        _latency(r.session, x32, 3)
    for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both alike
        for name, r in runners.items():
            lat[(name, 1)].append(_latency(r.session, x1, args.runs))
            lat[(name, 32)].append(_latency(r.session, x32, max(args.runs // 8, 5)))
    med = {k: statistics.median(v) for k, v in lat.items()}

    evals = {name: evaluate_on(r, store, data, policy).slices.set_index("slice") for name, r in runners.items()}
    print(f"{'slice':<12} {'objects':>7} {'fp32':>6} {'int8':>6} {'drop':>7}")
    worst, worst_slice = -math.inf, "-"
    for s in evals["fp32"].index:
        a, b = evals["fp32"].loc[s, "recall"], evals["int8"].loc[s, "recall"]
        drop = a - b if not (math.isnan(a) or math.isnan(b)) else float("nan")
        if not math.isnan(drop) and drop > worst:
            worst, worst_slice = drop, s
        print(f"{s:<12} {int(evals['fp32'].loc[s, 'objects']):>7} {a:>6.3f} {b:>6.3f} {drop:>+7.3f}")
    print(f"latency ms (median of {args.rounds} rounds): batch 1 fp32 {med[('fp32', 1)]:.3f} int8 {med[('int8', 1)]:.3f}; "
          f"batch 32 fp32 {med[('fp32', 32)]:.2f} int8 {med[('int8', 32)]:.2f} (fp32 {med[('fp32', 32)] / med[('int8', 32)]:.2f}x at batch 32)")
    print(f"engine sizes: fp32 {len(fp32.data) / 1024:.0f} KiB, int8 {len(int8.data) / 1024:.0f} KiB; "
          f"calibration frames {len(calib)}, test frames {len(test)}")
    print(f"engines perception v{v.version} {v.cohort}: fp32 {med[('fp32', 1)]:.3f} ms, int8 {med[('int8', 1)]:.3f} ms (batch 1), "
          f"worst slice drop {max(worst, 0.0):.3f} ({worst_slice}), fp32 {med[('fp32', 1)] / med[('int8', 1)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
