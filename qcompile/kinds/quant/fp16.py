"""``quant.kind=fp16``: every float tensor the model computes with halved to float16 (onnxruntime's
``convert_float_to_float16``): half the file, outputs within float16 rounding of FP32."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...graph import Node, Ref
from ..builder import Variant
from ..registry import register
from ..section import Kind
from ._ort import preprocessed

# Measured with ORT 1.32 on an AMD EPYC (AVX2, no native FP16 arithmetic), one thread, batch 1: a two-layer encoder
# (hidden 256) FP32 0.78 ms, FP16 0.83 ms p50; an MLP of hidden 1024 at 16 tokens 9.0 vs 9.6 ms. The graph ORT
# optimizes at load holds the weights as FP32 again (the weight Casts are folded).
CPU_NOTE = ("on x86 CPUs ONNX Runtime runs FP16 models through casts to FP32 kernels (it turns the weights back "
            "into FP32 when it loads the model): FP16 halves the file but does not make it faster there.")


@register("quant")
class Fp16Quant(Kind):
    """Float16 weights and arithmetic (onnxruntime's float16 converter); a size win on x86 CPUs, not a speed one."""

    kind: Literal["fp16"]
    keep_io_types: bool = Field(True, description="true: the inputs and outputs stay float32 (Cast nodes at the "
                                                  "edges), so the model takes what the FP32 model took")
    op_block_list: list[str] | None = Field(
        None, description="op types kept in float32; null: onnxruntime's default list (ops without float16 "
                          "kernels or that need the range: TopK, Range, CumSum, Min, Max, Upsample, "
                          "NonMaxSuppression, RoiAlign, the ai.onnx.ml ops)")

    def compile(self, b) -> None:
        # Pre-processed first, so folded BatchNorms and fused constants are rounded to float16 once.
        b.add(Node("quantize", "quantize.ort_fp16", self, inputs={"model": preprocessed(b, self)}))
        b.add_variant(Variant("fp16", Ref("quantize", "model"), scheme=self.scheme()))

    def scheme(self) -> dict[str, Any]:
        """How the variant was made, for reports and the bundle, with what it means on a CPU target."""
        return {"kind": "fp16", "step": "quantize.ort_fp16", **self.model_dump(mode="json", exclude={"kind"}),
                "note": CPU_NOTE}
