"""Export a perception checkpoint to ONNX, with its pre-processing inside the graph.

The exported graph takes float32 NHWC pixels in [0, 255] and returns the raw head
(class heat logits, offsets, log sizes): the same ``_prep`` standardization runs in the
car as in training, and decoding (peaks, thresholds) stays in one Python function shared
with the PyTorch path, so parity compares networks, not two decoders.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import torch
from torch import nn

from avops.curation.detector import _prep
from avops.training.checkpoints import Detector

INPUT, OUTPUT = "images", "raw"


class _Deployable(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # float32 NHWC in [0, 255]
        return self.net(_prep(images))


def export_onnx(model: Detector, opset: int, size: tuple[int, int] = (96, 96)) -> bytes:
    """ONNX bytes of ``model`` (first member), dynamic batch, checked with ``onnx.checker``; metadata names classes and thresholds."""
    import onnx

    if len(model.members) != 1:
        raise ValueError(f"export a single-member checkpoint, not a {len(model.members)}-member ensemble")
    net = _Deployable(model.members[0]).eval()
    dummy = torch.zeros(1, size[0], size[1], 3)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (dummy,), buf, dynamo=False, opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"classes": json.dumps(list(model.classes)), "score_threshold": str(model.config.score_threshold),
            "class_score_thresholds": json.dumps(model.config.class_score_thresholds or {}), "producer": "avops"}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def opset_of(onnx_bytes: bytes) -> int:
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def torch_raw(model: Detector, images: np.ndarray) -> np.ndarray:
    """The PyTorch checkpoint's raw head on uint8/float NHWC images (the reference for export parity)."""
    with torch.inference_mode():
        return _Deployable(model.members[0]).eval()(torch.from_numpy(np.asarray(images, np.float32))).numpy()
