"""The ``data.digits`` step: scikit-learn's digits (0-16 grey levels) scaled to 0-255 and resized (bilinear) to the
model's image size, then normalised and split (``data.kind=digits``)."""

from __future__ import annotations

from typing import Any

from ..errors import BadInput
from ..kinds.data.digits import DigitsParams
from .base import Step, StepContext, register
from .data import save_image_splits


@register
class DigitsDataStep(Step):
    """sklearn's digits resized to the model's (C, H, W) input; outputs train, calibration and evaluation splits."""

    kind = "data.digits"
    version = 2  # 2: params hold the data section
    Params = DigitsParams
    outputs = {"train": "train.npz", "calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("scikit-learn", "numpy", "pillow")

    def run(self, ctx: StepContext, p: DigitsParams) -> dict[str, Any]:
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
