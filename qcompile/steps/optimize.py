"""ORT's quantization pre-processing: shape inference and graph fusions (Conv+BN, ...) before calibration."""

from __future__ import annotations

import json
from typing import Any

from ..kinds.quant._ort import PreprocessParams
from .base import Step, StepContext, register
from .node_names import node_map
from .quiet import quiet


@register
class OrtPreprocessStep(Step):
    """``quant_pre_process``: shape inference and fusions, as ORT recommends before quantizing; and which of its
    nodes each node of the FP32 model became, so recipes and reports use the FP32 model's names."""

    kind = "optimize.ort_preprocess"
    version = 2  # 2: unnamed nodes named after the FP32 node they implement; names.json
    Params = PreprocessParams
    inputs = ("model",)
    outputs = {"model": "model.prep.onnx", "names": "names.json"}
    libraries = ("onnx", "onnxruntime")

    def run(self, ctx: StepContext, p: PreprocessParams) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with quiet("onnxruntime"):
            quant_pre_process(str(ctx.inputs["model"]), str(ctx.out("model")),
                              skip_optimization=p.skip_optimization, skip_symbolic_shape=p.skip_symbolic_shape)
        optimized = onnx.load(str(ctx.out("model")))
        names = node_map(onnx.load(str(ctx.inputs["model"]), load_external_data=False), optimized)
        onnx.save(optimized, str(ctx.out("model")))
        ctx.out("names").write_text(json.dumps(names, indent=1, sort_keys=True))
        return {"bytes": ctx.out("model").stat().st_size, "nodes": len(names["nodes"]),
                "optimized_nodes": len(names["optimized"])}
