"""``quant.kind=dynamic``: int8 weights, activation ranges computed at run time; no calibration data."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from ...graph import Node, Ref
from ..builder import Variant
from ..registry import register
from ..section import Kind
from ._ort import check_op_types, preprocessed
from .exclude import Exclude, check_names


@register("quant")
class DynamicQuant(Kind):
    """Dynamic quantization: int8 weights, activation ranges computed at run time; no calibration data."""

    kind: Literal["dynamic"]
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = False
    reduce_range: bool = False
    op_types: list[str] | None = ["MatMul", "Gemm"]
    exclude: Exclude = Exclude()

    _ops = field_validator("op_types")(classmethod(lambda cls, v: check_op_types(v)))

    def compile(self, b) -> None:
        nodes = b.get("onnx.fp32.nodes")
        if self.exclude and nodes is not None:
            check_names(self.exclude, nodes())
        # The section is the quantize step's params: every option of it changes the quantized model.
        b.add(Node("quantize", "quantize.ort_dynamic", self,
                   inputs={"model": preprocessed(b, self), "names": Ref("optimize", "names")}))
        b.add_variant(Variant("int8_dynamic", Ref("quantize", "model"),
                              scheme={"kind": "dynamic", "step": "quantize.ort_dynamic",
                                      **self.model_dump(mode="json", exclude={"kind"})}))
