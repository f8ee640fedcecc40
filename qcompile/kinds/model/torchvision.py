"""``model.kind=torchvision``: a torchvision classifier, random-init or with a local state_dict."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ...graph import Node, Ref
from ...signature import image_classifier
from ...steps import model as steps
from ..registry import register
from ..section import IMAGENET, ExportSpec, Kind, Normalize, UserFile
from ._torch import provide_torch_model
from ._torchvision_names import TorchvisionName


@register("model")
class TorchvisionModel(Kind):
    """A torchvision classifier, random-init (latency, fidelity) or with a local state_dict."""

    kind: Literal["torchvision"]
    name: TorchvisionName
    weights: UserFile | None = Field(None, description="local state_dict file, loaded with weights_only=True")
    num_classes: PositiveInt = 1000
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (3, 224, 224)
    seed: int = Field(0, description="seed of the random init when weights is null")
    normalize: Normalize = Field(IMAGENET, description="input normalisation the weights were trained with")
    export: ExportSpec = ExportSpec()

    def declare(self, b) -> None:
        b.provide("signature", image_classifier(self.input_shape, self.num_classes, self.export.dynamic_batch), self)
        b.provide("preprocess", self.normalize.model_dump(), self)

    def compile(self, b) -> None:
        b.add(Node("model", steps.TorchvisionModel.kind,
                   steps.TorchvisionParams(name=self.name, num_classes=self.num_classes, seed=self.seed,
                                           weights=self.weights)))
        arch = {"family": "torchvision", "name": self.name, "num_classes": self.num_classes}
        provide_torch_model(self, b, Ref("model", "weights"), arch, self.export)
