"""What torch model kinds share: the export node that turns their weights into the FP32 ONNX model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...graph import Node, Ref
from ...steps import export
from ..section import ExportSpec, Kind


@dataclass(frozen=True)
class TorchModel:
    """The ``torch_model`` port: weights produced by a node, and the architecture that loads them."""

    weights: Ref
    arch: dict[str, Any]


def provide_torch_model(section: Kind, b, weights: Ref, arch: dict[str, Any], spec: ExportSpec) -> None:
    """Provide ``torch_model``, add the export node and provide ``onnx.fp32``."""
    b.provide("torch_model", TorchModel(weights, arch), section)
    b.add(Node("export", export.ExportOnnx.kind,
               export.ExportParams(arch=arch, signature=b.need("signature", section), opset=spec.opset,
                                   tolerance=spec.tolerance),
               inputs={"weights": weights}, publish={"model": "model.fp32.onnx"}))
    b.provide("onnx.fp32", Ref("export", "model"), section)
