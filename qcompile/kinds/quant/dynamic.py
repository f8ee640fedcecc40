"""``quant.kind=dynamic``: int8 weights, activation ranges computed at run time; no calibration data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ...graph import Node, Ref, StepParams
from ..builder import Variant
from ..registry import register
from ..section import Kind
from ._ort import check_op_types, model_default, preprocessed
from .exclude import Exclude, check_names

DEFAULT_OP_TYPES = ["MatMul", "Gemm"]


@register("quant")
class DynamicQuant(Kind):
    """Dynamic quantization: int8 weights, activation ranges computed at run time; no calibration data."""

    kind: Literal["dynamic"]
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool | None = Field(None, description="int8 scale per output channel of each weight (null: what "
                                     "the model kind recommends, per-channel for transformer encoders; else "
                                     "per-tensor)")
    reduce_range: bool = False
    op_types: list[str] | None | Literal["auto"] = Field(
        "auto", description="op types to quantize; auto: what the model kind recommends (transformer encoders: "
                            "MatMul, Gemm and the embedding Gather), else MatMul and Gemm; null: every type ORT "
                            "can quantize dynamically")
    exclude: Exclude = Exclude()

    _ops = field_validator("op_types")(classmethod(lambda cls, v: v if v == "auto" else check_op_types(v)))

    def compile(self, b) -> None:
        nodes = b.get("onnx.fp32.nodes")
        if self.exclude and nodes is not None:
            check_names(self.exclude, nodes())
        params = DynamicQuantizeParams(
            quant=self, per_channel=model_default(b, "dynamic", "per_channel", self.per_channel, False),
            op_types=model_default(b, "dynamic", "op_types", self.op_types, DEFAULT_OP_TYPES, unset="auto"))
        b.add(Node("quantize", "quantize.ort_dynamic", params,
                   inputs={"model": preprocessed(b, self), "names": Ref("optimize", "names")}))
        b.add_variant(Variant("int8_dynamic", Ref("quantize", "model"), scheme=params.scheme()))


class DynamicQuantizeParams(StepParams):
    """Params of the ``quantize.ort_dynamic`` step: the section, with what it left to the model resolved."""

    quant: DynamicQuant
    per_channel: bool
    op_types: list[str] | None

    def scheme(self) -> dict[str, Any]:
        """How the variant was made, flat, for reports and the bundle."""
        return {"kind": "dynamic", "step": "quantize.ort_dynamic",
                **self.quant.model_dump(mode="json", exclude={"kind"}),
                "per_channel": self.per_channel, "op_types": self.op_types}
