"""``model.kind=mnist_cnn``: the offline demo model, a small CNN trained (as a cached step) on the data's
training split."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from ...graph import Node, Ref
from ...models.arch import MnistCnnArch
from ...signature import image_classifier
from ..registry import register
from ..section import ExportSpec, Kind, Normalize, Section, contract
from ._torch import provide_torch_model

MNIST_NORMALIZE = Normalize(mean=[0.1307], std=[0.3081])


# The params of the model.mnist_cnn step, as they are: every field changes the trained weights.
class TrainSpec(Section):
    """Training of the demo model (a cached step, so it runs once)."""

    epochs: PositiveInt = 5
    batch_size: PositiveInt = 64
    lr: float = Field(2e-3, gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the initial weights and the batch order")


@register("model")
class MnistCnnModel(Kind):
    """The offline demo model: a small CNN trained on real digits (any data kind with a training split)."""

    requires: ClassVar[dict[str, str]] = {"torch": "torch"}

    kind: Literal["mnist_cnn"]
    input_shape: tuple[Literal[1], Literal[28], Literal[28]] = (1, 28, 28)
    num_classes: Literal[10] = 10
    normalize: Normalize = Field(MNIST_NORMALIZE, description="input normalisation the model trains with")
    train: TrainSpec = TrainSpec()
    export: ExportSpec = ExportSpec()

    def declare(self, b) -> None:
        b.provide("signature", image_classifier(self.input_shape, self.num_classes, self.export.dynamic_batch), self)
        b.provide("preprocess", contract(self.input_shape, self.normalize, None), self)
        b.provide("labels", [str(d) for d in range(10)], self)

    def compile(self, b) -> None:
        b.add(Node("train", "model.mnist_cnn", self.train,
                   inputs={"train": b.need("samples.train", self, "a training split (samples.train)")},
                   publish={"weights": "weights.pt"}))
        provide_torch_model(self, b, Ref("train", "module"), MnistCnnArch(), self.export)
