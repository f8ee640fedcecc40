"""The package step: a deployment bundle of one variant (see ``qcompile.bundle.layout`` for what it holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import model_serializer

from ..bundle.layout import write_bundle
from ..bundle.text import TokenizerFileError
from ..errors import BadInput
from ..signature import Signature
from .base import Step, StepContext, StepParams, register


class BundleParams(StepParams):
    signature: Signature
    normalize: dict[str, Any] | None
    labels: list[str] | None
    variant: str
    scheme: dict[str, Any]
    runtime: dict[str, Any]
    # What the target deploys: the model file's name in the bundle, text files (a trtexec line), app snippets.
    model_file: str = "model.onnx"
    texts: dict[str, str] = {}
    app_snippets: bool = False
    # A sentence encoder's text port (its tokenizer file's path under "tokenizer"); None for every other model.
    text: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _without_absent_text(self, handler):
        # The key dumps the params: leaving out a text port nobody provides keeps the keys (and cached bundles) of
        # image models what they were before text bundles existed.
        data = handler(self)
        if data.get("text", ()) is None:
            del data["text"]
        return data


@register
class BundleStep(Step):
    """Packs a variant's model, its preprocessing contract, labels, a manifest and a reference runner."""

    kind = "package.bundle"
    # 2: signature-driven preprocess.json and manifest; 3: the target's files (.ort, engine, configs);
    # 4: files over 1 MiB stored uncompressed
    version = 4
    Params = BundleParams
    file_fields = ("text.tokenizer",)  # the tokenizer's content is keyed, not where the model folder lies
    inputs = ("model",)  # and the target's side files, each input named by its file name in the bundle
    outputs = {"bundle": "bundle.zip"}
    libraries = ("onnx", "onnxruntime")

    def run(self, ctx: StepContext, p: BundleParams) -> dict[str, Any]:
        import onnx
        import onnxruntime

        model_bytes = Path(ctx.inputs["model"]).read_bytes()
        extra = {name: Path(path).read_bytes() for name, path in ctx.inputs.items() if name != "model"}
        extra.update({name: text.encode() for name, text in p.texts.items()})
        onnx_bytes = model_bytes if p.model_file.endswith(".onnx") else extra.get("model.onnx")
        opset = None
        if onnx_bytes is not None:
            proto = onnx.load_from_string(onnx_bytes)
            opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
        engine = p.model_file.endswith(".engine")
        tokenizer, tokenizer_file = None, Path(p.text["tokenizer"]) if p.text is not None else None
        if tokenizer_file is not None:
            try:
                tokenizer = tokenizer_file.read_bytes()
            except OSError as e:
                raise BadInput(f"{tokenizer_file} cannot be read ({e.strerror})", key="model.path") from None
        try:
            files = write_bundle(ctx.out("bundle"), model_bytes, p.signature, p.normalize, p.labels,
                                 model_info={"opset": opset, "variant": p.variant, "quantization": p.scheme},
                                 runtime={**({} if engine else {"onnxruntime": f">={onnxruntime.__version__}"}),
                                          **p.runtime},
                                 model_file=p.model_file, extra_files=extra, app_snippets=p.app_snippets,
                                 text=p.text, tokenizer=tokenizer)
        except TokenizerFileError as e:
            raise BadInput(f"{tokenizer_file}: {e}", key="model.path") from None
        # Where evaluate and benchmark ran (a stand-in host for a phone or GPU), for the report to say.
        return {"measured_on": p.runtime.get("measured_on"),
                "files": files, "has_labels": bool(p.labels), "normalized": p.normalize is not None,
                **({"text": True} if p.text is not None else {})}
