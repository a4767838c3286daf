"""Engine backends behind one interface: ONNX Runtime (runs here), TensorRT (GPU hosts), and targets we cannot build.

A backend either returns a real engine or raises :class:`ToolchainUnavailable` with what to
do next; nothing ever returns a placeholder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avops.curation.detector import FrameDetections, TeacherConfig, _ensemble_frame

GPU_HINT = "run this partition on a GPU executor (Dagster tag avops/executor=gpu routes it to the GPU run queue)"


class ToolchainUnavailable(RuntimeError):
    """The toolchain a target needs cannot run on this host."""


@dataclass
class Engine:
    soc: str
    precision: str
    toolchain: str
    toolchain_version: str
    data: bytes
    build_flags: dict
    deterministic: bool
    runtime: str  # how to run it: onnxruntime | tensorrt
    calibration_sha256: str | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- ONNX Runtime


def ort_version() -> str:
    import onnxruntime

    return ".".join(onnxruntime.__version__.split(".")[:2])


def session(data: bytes, threads: int = 1):
    """An ONNX Runtime CPU session with pinned threads (how every engine here is run)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def build_ort_fp32(onnx_bytes: bytes, soc: str) -> Engine:
    """Graph-optimized FP32 (constant folding, fusions) saved as an ONNX Runtime-specific model."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        data = out.read_bytes()
    return Engine(soc, "fp32", "onnxruntime", ort_version(), data, {"graph_optimization_level": "ORT_ENABLE_EXTENDED"},
                  True, "onnxruntime")


class _Reader:
    """CalibrationDataReader over calibration inputs (float32 batches: images, or feature rows)."""

    def __init__(self, images: np.ndarray, batch: int = 16, input_name: str = "images") -> None:
        self._it: Iterator = iter([{input_name: np.asarray(images[a:a + batch], np.float32)} for a in range(0, len(images), batch)])

    def get_next(self):
        return next(self._it, None)


def build_ort_int8(onnx_bytes: bytes, soc: str, calibration: np.ndarray, calibration_sha256: str, input_name: str = "images",
                   op_types: tuple[str, ...] = ("Conv",)) -> Engine:
    """Static INT8 (QDQ, per-channel weights, UInt8 activations) calibrated on the calibration split only."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("INT8 calibration needs calibration frames: the curated set's calibration (val) split is empty")
    flags = {"format": "QDQ", "per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
             "calibrate_method": "MinMax", "op_types_to_quantize": list(op_types), "calibration_frames": int(len(calibration))}
    with tempfile.TemporaryDirectory() as d:
        src, pre, out = Path(d) / "fp32.onnx", Path(d) / "pre.onnx", Path(d) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader(calibration, input_name=input_name), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                        calibrate_method=CalibrationMethod.MinMax)
        data = out.read_bytes()
    return Engine(soc, "int8", "onnxruntime", ort_version(), data, flags, True, "onnxruntime", calibration_sha256)


# ---------------------------------------------------------------------------------------- TensorRT


def tensorrt_status() -> tuple[bool, str]:
    """Whether TensorRT can build here, and why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, f"toolchain tensorrt unavailable on this host (the `tensorrt` package is not installed); {GPU_HINT}"
    if not torch.cuda.is_available():
        return False, f"toolchain tensorrt unavailable on this host (no NVIDIA GPU visible); {GPU_HINT}"
    return True, "ok"


def build_tensorrt(onnx_bytes: bytes, soc: str, precision: str, version: str, qdq_onnx: bytes | None = None) -> Engine:
    """Build a serialized TensorRT engine: ONNX parser, FP16 flag, or explicit INT8 from the QDQ model."""
    ok, why = tensorrt_status()
    if not ok:
        raise ToolchainUnavailable(why)
    import tensorrt as trt

    have = ".".join(trt.__version__.split(".")[:2])
    if have != version:
        raise ToolchainUnavailable(f"toolchain tensorrt {have} installed, but {soc} vehicles of this cohort run {version}: "
                                   f"an engine only loads in the TensorRT version that built it; {GPU_HINT} with tensorrt {version}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if int(have.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    source = qdq_onnx if precision == "int8" else onnx_bytes
    if source is None:
        raise ValueError("INT8 TensorRT engines are built from the calibrated QDQ model (explicit quantization)")
    if not parser.parse(source):
        raise RuntimeError("TensorRT could not parse the ONNX model: " + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    build_flags = {"workspace_bytes": 1 << 28}
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        build_flags["fp16"] = True
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        build_flags["int8"] = "explicit (QDQ)"
    profile = builder.create_optimization_profile()
    shape = tuple(network.get_input(0).shape)[1:]
    profile.set_shape(network.get_input(0).name, (1, *shape), (1, *shape), (8, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build the {precision} engine for {soc}")
    return Engine(soc, precision, "tensorrt", have, bytes(serialized), build_flags, False, "tensorrt",
                  notes=["TensorRT selects kernels by timing: rebuilds can differ byte-wise"])


# ---------------------------------------------------------------------------------------- running an engine


class OrtEngineDetector:
    """Runs an ONNX Runtime engine and decodes exactly like the PyTorch detector (``predict`` -> FrameDetections)."""

    def __init__(self, data: bytes, threads: int = 2) -> None:
        self.session = session(data, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.classes = tuple(json.loads(meta["classes"]))
        cfg = TeacherConfig(members=1, score_threshold=float(meta["score_threshold"]),
                            class_score_thresholds=json.loads(meta.get("class_score_thresholds", "{}")) or None)
        overrides = cfg.class_score_thresholds or {}
        self._thr = np.array([float(overrides.get(c, cfg.score_threshold)) for c in self.classes], np.float32)
        self._score = cfg.score_threshold

    def raw(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": np.asarray(images, np.float32)})[0]

    def predict(self, images: np.ndarray, batch_size: int = 64) -> list[FrameDetections]:
        c = len(self.classes)
        h, w = np.asarray(images).shape[1:3]
        out = []
        for a in range(0, len(images), batch_size):
            raw = torch.from_numpy(self.raw(images[a:a + batch_size]))
            heats, regs = torch.sigmoid(raw[:, :c]), raw[:, c:]
            for i in range(len(raw)):
                out.append(_ensemble_frame(heats[i][None], regs[i][None], self.classes, self._score, (h, w), self._thr))
        return out


def measure(data: bytes, runs: int = 60) -> dict:
    """Median single-frame latency and peak memory of an ONNX Runtime engine, in a fresh process (clean peak RSS)."""
    import subprocess
    import sys

    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
        f.write(data)
        path = f.name
    try:
        out = subprocess.run([sys.executable, "-m", "avops.compile.measure", path, str(runs)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode != 0:
            raise RuntimeError(f"measuring {path} failed: {out.stderr[-800:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(path)
