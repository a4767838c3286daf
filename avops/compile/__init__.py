"""Per-SoC compiled engines: ONNX export, backends (ONNX Runtime, TensorRT), parity, budgets, compatibility."""
