"""``model.kind=mnist_cnn``: the offline demo model, a small CNN (or, with ``net: mobile``, a MobileNetV3-style
net) trained (as a cached step) on the data's training split."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from ...graph import Node, Ref
from ...models.arch import Arch, DigitsMobileArch, MnistCnnArch
from ...signature import image_classifier
from ..registry import register
from ..section import ExportSpec, Kind, Normalize, Section, contract
from ._torch import provide_torch_model

MNIST_NORMALIZE = Normalize(mean=[0.1307], std=[0.3081])
# Each net: its architecture and the step kind that trains it. One step kind per net keeps the step's params the
# recipe's own train section, and the CNN's key what it was before the mobile net came.
NETS: dict[str, tuple[Arch, str]] = {"cnn": (MnistCnnArch(), "model.mnist_cnn"),
                                     "mobile": (DigitsMobileArch(), "model.digits_mobile")}


# The params of the model.mnist_cnn and model.digits_mobile steps, as they are: every field changes the trained
# weights.
class TrainSpec(Section):
    """Training of the demo model (a cached step, so it runs once)."""

    epochs: PositiveInt = 5
    batch_size: PositiveInt = 64
    lr: float = Field(2e-3, gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the initial weights and the batch order")


@register("model")
class MnistCnnModel(Kind):
    """The offline demo model: a small net trained on real digits (any data kind with a training split)."""

    requires: ClassVar[dict[str, str]] = {"torch": "torch"}

    kind: Literal["mnist_cnn"]
    input_shape: tuple[Literal[1], Literal[28], Literal[28]] = (1, 28, 28)
    num_classes: Literal[10] = 10
    net: Literal["cnn", "mobile"] = Field(
        "cnn", description="cnn: Conv-BN-ReLU twice and two linear layers (~420k parameters); mobile: "
                           "MobileNetV3-style, depthwise convs, hardswish, squeeze-excite (~58k parameters)")
    normalize: Normalize = Field(MNIST_NORMALIZE, description="input normalisation the model trains with")
    train: TrainSpec = TrainSpec()
    export: ExportSpec = ExportSpec()

    def declare(self, b) -> None:
        b.provide("signature", image_classifier(self.input_shape, self.num_classes, self.export.dynamic_batch), self)
        b.provide("preprocess", contract(self.input_shape, self.normalize, None), self)
        b.provide("labels", [str(d) for d in range(10)], self)

    def compile(self, b) -> None:
        arch, step = NETS[self.net]
        b.add(Node("train", step, self.train,
                   inputs={"train": b.need("samples.train", self, "a training split (samples.train)")},
                   publish={"weights": "weights.pt"}))
        provide_torch_model(self, b, Ref("train", "module"), arch, self.export)
