"""The maintenance checkpoint as an ONNX graph for the vehicle's gateway ECU.

The gateway computes the telemetry features online (``avops.features.online``, the same
definitions as the training tables) and feeds one row per vehicle window into this graph. Per
component it returns the estimated wear (mm) and whether service is due within the horizon, with
the training-time imputation (a missing feature takes its training mean) inside the graph, so
the car and the fleet backend decide alike.
"""

from __future__ import annotations

import json

import numpy as np

from avops.maintenance.model import ComponentModel

INPUT = "features"
OPSET = 17


def feature_order(components: dict[str, ComponentModel]) -> list[str]:
    """The input columns: every component's features, first use first."""
    out: list[str] = []
    for c in components.values():
        out += [f for f in c.features if f not in out]
    return out


def export_onnx(components: dict[str, ComponentModel], meta: dict) -> bytes:
    """ONNX bytes: input ``features`` float32 [batch, k]; per component ``<name>_mm`` [batch] and ``<name>_due`` [batch] (bool)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    columns = feature_order(components)
    nodes, inits, outputs = [], [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for name, c in components.items():
        idx = const(f"{name}_idx", np.array([columns.index(f) for f in c.features], np.int64))
        mean = const(f"{name}_mean", np.asarray(c.mean, np.float32))
        scale = const(f"{name}_scale", np.asarray(c.scale, np.float32))
        coef = const(f"{name}_coef", np.asarray(c.coef, np.float32).reshape(-1, 1))
        icpt = const(f"{name}_intercept", np.asarray([c.intercept], np.float32))
        margin = const(f"{name}_margin", np.asarray([c.wear_rate_mm_per_day * c.horizon_days], np.float32))
        limit = const(f"{name}_limit", np.asarray([c.wear_limit_mm], np.float32))
        axes = const(f"{name}_axes", np.array([1], np.int64))
        nodes += [
            helper.make_node("Gather", [INPUT, idx], [f"{name}_x"], axis=1),
            helper.make_node("IsNaN", [f"{name}_x"], [f"{name}_nan"]),
            helper.make_node("IsInf", [f"{name}_x"], [f"{name}_inf"]),
            helper.make_node("Or", [f"{name}_nan", f"{name}_inf"], [f"{name}_missing"]),
            helper.make_node("Where", [f"{name}_missing", mean, f"{name}_x"], [f"{name}_filled"]),
            helper.make_node("Sub", [f"{name}_filled", mean], [f"{name}_centred"]),
            helper.make_node("Div", [f"{name}_centred", scale], [f"{name}_z"]),
            helper.make_node("MatMul", [f"{name}_z", coef], [f"{name}_lin"]),
            helper.make_node("Add", [f"{name}_lin", icpt], [f"{name}_col"]),
            helper.make_node("Squeeze", [f"{name}_col", axes], [f"{name}_mm"]),
            helper.make_node("Sub", [f"{name}_mm", margin], [f"{name}_ahead"]),
            helper.make_node("LessOrEqual", [f"{name}_ahead", limit], [f"{name}_due"]),
        ]
        outputs += [helper.make_tensor_value_info(f"{name}_mm", TensorProto.FLOAT, ["batch"]),
                    helper.make_tensor_value_info(f"{name}_due", TensorProto.BOOL, ["batch"])]
    graph = helper.make_graph(nodes, "avops_maintenance", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", len(columns)])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8, producer_name="avops")
    for k, v in {"features": json.dumps(columns), "components": json.dumps(list(components)), "units": "mm", **meta}.items():
        model.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def run(engine: bytes, X: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of an engine on feature rows (float32), by name."""
    from avops.compile.backends import session

    sess = session(engine)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {INPUT: np.asarray(X, np.float32)})))
