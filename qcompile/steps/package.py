"""The package step: a deployment bundle of one variant (see ``qcompile.bundle.layout`` for what it holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bundle.layout import write_bundle
from ..signature import Signature
from .base import Step, StepContext, StepParams, register


class BundleParams(StepParams):
    signature: Signature
    normalize: dict[str, Any] | None
    labels: list[str] | None
    variant: str
    scheme: dict[str, Any]
    runtime: dict[str, Any]


@register
class Bundle(Step):
    """Packs a variant's model, its preprocessing contract, labels, a manifest and a reference runner."""

    kind = "package.bundle"
    version = 2  # 2: signature-driven preprocess.json and manifest
    Params = BundleParams
    inputs = ("model",)
    outputs = {"bundle": "bundle.zip"}
    libraries = ("onnx", "onnxruntime")

    def run(self, ctx: StepContext, p: BundleParams) -> dict[str, Any]:
        import onnx
        import onnxruntime

        model_bytes = Path(ctx.inputs["model"]).read_bytes()
        proto = onnx.load_from_string(model_bytes)
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
        files = write_bundle(ctx.out("bundle"), model_bytes, p.signature, p.normalize, p.labels,
                             model_info={"opset": opset, "variant": p.variant, "quantization": p.scheme},
                             runtime={"onnxruntime": f">={onnxruntime.__version__}", **p.runtime})
        return {"files": files, "has_labels": bool(p.labels), "normalized": p.normalize is not None}
