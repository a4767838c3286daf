"""``python -m avops.compile.measure ENGINE.onnx RUNS``: latency and peak memory of one engine, as JSON.

Runs in its own process so the peak resident memory is the engine's (session, weights, arena,
activations), not the pipeline's; the runtime's own libraries are loaded before the baseline.
"""

import json
import sys
import time


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _warm_runtime(ort) -> None:
    """Load ONNX Runtime's libraries with a one-node model, so they do not count as the engine's memory."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "warm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    import numpy as np

    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": np.zeros(1, np.float32)})


def main(path: str, runs: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    _warm_runtime(ort)
    base = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]  # camera frames for perception, one feature row for maintenance
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    for _ in range(5):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t0) * 1000)
    peak = _status_mb("VmHWM")
    return {"latency_ms_median": float(np.median(times)), "latency_ms_p95": float(np.percentile(times, 95)),
            "peak_memory_mb": round(peak - base, 2), "runs": runs, "threads": 1}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
