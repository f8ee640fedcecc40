"""ORT's transformer graph optimizer (``onnxruntime.transformers.optimizer``): Attention, SkipLayerNormalization,
Gelu and LayerNormalization fusions on an exported encoder, offline, so every later step sees the fused graph."""

from __future__ import annotations

from typing import Any

from ..kinds.model.hf_encoder import FusionParams
from .base import Step, StepContext, register
from .contrib_ops import import_contrib_domain
from .quiet import quiet


@register
class TransformerFusionStep(Step):
    """Fuses the encoder's subgraphs into ORT's contrib operators and saves one self-contained file."""

    kind = "optimize.ort_transformer"
    Params = FusionParams
    inputs = ("model",)
    outputs = {"model": "model.onnx"}
    libraries = ("onnx", "onnxruntime")

    def run(self, ctx: StepContext, p: FusionParams) -> dict[str, Any]:
        import onnx
        from onnxruntime.transformers.optimizer import optimize_model

        with quiet("onnxruntime", loggers=("onnxruntime", "onnx_model", "fusion_base")):
            model = optimize_model(str(ctx.inputs["model"]), model_type=p.model_type, num_heads=p.num_heads,
                                   hidden_size=p.hidden_size, opt_level=0)
            fused = {k: v for k, v in sorted(model.get_fused_operator_statistics().items()) if v}
        proto = model.model
        import_contrib_domain(proto)  # fused nodes are contrib ops; the optimizer may not import their domain
        onnx.save(proto, str(ctx.out("model")))
        onnx.checker.check_model(str(ctx.out("model")))
        if not fused:
            ctx.note("ORT's transformer optimizer found nothing to fuse in this graph")
        return {"fused": fused, "nodes": len(model.model.graph.node)}
