"""``target.kind=ort_mobile``: ONNX Runtime Mobile on an arm64 phone (Android: NNAPI / XNNPACK; iOS: CoreML /
XNNPACK), from a ``.ort`` model.

Quantization defaults are ARM's: int8 activations (asymmetric, which XNNPACK and NNAPI take) and symmetric
per-channel int8 weights (what XNNPACK wants; ORT's default for int8 weights). Every variant is converted to the
ORT format for arm, with the operator configs of a reduced ORT build and the mobile usability check; evaluate and
benchmark run that ``.ort`` with ONNX Runtime on the build host's CPU, so the accuracy is the phone's but the
latency is the host's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ..registry import register
from ..section import Kind

HOST_NOTE = "build host CPU (ONNX Runtime on the .ort file); latency is the host's, not the phone's"


@register("target")
class OrtMobileTarget(Kind):
    """ONNX Runtime Mobile (ORT format) on an arm64 phone."""

    kind: Literal["ort_mobile"]
    platform: Literal["android", "ios"] = "android"
    arch: Literal["arm64"] = "arm64"
    optimization_style: Literal["Fixed", "Runtime"] = Field(
        "Fixed", description="Fixed: optimisations baked in for this platform; Runtime: replayed on the device")
    fixed_batch: PositiveInt | None = Field(
        None, description="fix the dynamic batch axis to this size (make_dynamic_shape_fixed), as NNAPI needs to "
                          "take the whole graph; null keeps it dynamic")

    def declare(self, b) -> None:
        b.provide("quant.defaults", {"activation_type": "int8", "isa": self.arch}, self)
        b.provide("runtime", {"providers": ["CPUExecutionProvider"], "threads": 0, "level": "all",
                              "measured_on": HOST_NOTE, "platform": self.platform}, self)

    def compile(self, b) -> None:
        fixed: dict[str, int] = {}
        if self.fixed_batch is not None:
            batch = b.need("signature", self).inputs[0].shape[0]
            if not isinstance(batch, str):
                raise BadInput(f"the model's batch axis is already fixed at {batch}", key="target.fixed_batch")
            fixed = {batch: self.fixed_batch}
        params = OrtFormatParams(target=self, fixed_dims=fixed)
        bundles = {}
        for v in b.variants:
            node = b.add(Node(f"ort_format.{v.name}", "convert.ort_format", params, inputs={"model": v.model},
                              publish={"model": f"model.{v.name}.ort", "usability": f"usability.{v.name}.json"}))
            v.deploy = Ref(node.name, "model")
            bundles[v.name] = {"model_file": "model.ort", "app_snippets": True,
                               "files": {"required_operators.config": Ref(node.name, "operators"),
                                         "required_operators_and_types.config": Ref(node.name, "operators_types"),
                                         "usability.json": Ref(node.name, "usability")}}
        b.provide("bundle.files", bundles, self)


class OrtFormatParams(StepParams):
    """Params of the ``convert.ort_format`` step: the target section, with its fixed batch named as the model's axis."""

    target: OrtMobileTarget
    fixed_dims: dict[str, int]  # dim_param -> value (empty: shapes stay as they are)
