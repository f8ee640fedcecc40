"""``model.kind=onnx``: an ONNX file the user already has; its signature is read from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ...signature import Signature, Task, TensorSpec
from ..registry import register
from ..section import Kind, Normalize, Preprocess, UserFile, contract
from ._onnx_signature import inspect_onnx, node_list
from ._transformer import ENCODER_QUANT_DEFAULTS, is_token_model


@register("model")
class OnnxModel(Kind):
    """An ONNX file the user already has; the export step is skipped."""

    kind: Literal["onnx"]
    path: UserFile
    input_shape: tuple[PositiveInt, ...] | None = Field(
        None, description="shape of the single input without the batch axis: checks the file, and fills its "
                          "dynamic axes (null: as the file says)")
    task: Task = "classification"
    normalize: Normalize | None = Field(None, description="input normalisation, for the deployment bundle")
    preprocess: Preprocess | None = Field(None, description="resize, crop, interpolation and colour of image inputs "
                                                             "(null: resize straight to the input size)")

    def declare(self, b) -> None:
        sig, external = inspect_onnx(self.path, self.task)
        b.provide("onnx.external_files", external, self)
        if self.input_shape is not None:
            sig = self._with_shape(sig, tuple(self.input_shape))
        b.provide("signature", sig, self)
        if is_token_model(sig):
            b.provide("quant.model_defaults", ENCODER_QUANT_DEFAULTS, self)
        image = sig.single_image_input
        b.provide("preprocess", contract(image.sample_shape if image else None, self.normalize, self.preprocess), self)

    def _with_shape(self, sig: Signature, shape: tuple[int, ...]) -> Signature:
        if len(sig.inputs) != 1:
            raise BadInput(f"{self.path.name} has {len(sig.inputs)} inputs {sig.input_names}; input_shape fits a "
                           "single-input model (leave it null to use the file's shapes)", key="model.input_shape")
        (inp,) = sig.inputs
        dims = inp.sample_shape
        if len(dims) != len(shape) or any(isinstance(d, int) and d != w for d, w in zip(dims, shape)):
            shown = [d if isinstance(d, int) else "?" for d in dims]
            raise BadInput(f"is {list(shape)} but {self.path.name} takes {shown} after the batch axis",
                           key="model.input_shape")
        spec = TensorSpec(name=inp.name, dtype=inp.dtype, shape=(inp.shape[0], *shape))
        return sig.model_copy(update={"inputs": (spec,)})

    def compile(self, b) -> None:
        b.add(Node("model", "model.onnx",
                   OnnxFileParams(model=self, external=b.need("onnx.external_files", self),
                                  signature=b.need("signature", self)),
                   publish={"model": "model.fp32.onnx"}))
        b.provide("onnx.fp32", Ref("model", "model"), self)
        # Read only when a recipe names nodes (quant.exclude), so they are checked before anything runs.
        b.provide("onnx.fp32.nodes", lambda: node_list(self.path), self)


class OnnxFileParams(StepParams):
    """Params of the ``model.onnx`` step: the section, the external data files the model names (keyed by content
    like the model), and the signature read from the file at plan time."""

    model: OnnxModel
    external: tuple[Path, ...] = ()
    signature: Signature
