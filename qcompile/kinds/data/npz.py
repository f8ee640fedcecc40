"""``data.kind=npz``: the user's own preprocessed samples in an .npz file (optionally with integer labels)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...graph import Node, StepParams
from ...signature import TensorSpec
from ..registry import register
from ..section import UserFile
from ._split import SplitData, provide_splits


def _classes(sig) -> int | None:
    """How many classes a classifier's first output has (None when unknown or not a classifier)."""
    last = sig.outputs[0].shape[-1] if sig.outputs[0].shape else None
    return last if sig.task == "classification" and isinstance(last, int) else None


@register("data")
class NpzData(SplitData):
    """The user's own samples: an .npz file with inputs (and optionally integer labels)."""

    kind: Literal["npz"]
    path: UserFile
    x_key: str = Field("x", min_length=1,
                       description="the array of a single-input model; several inputs read one array per name")
    y_key: str | None = Field("y", min_length=1, description="integer labels; the file must hold it (null: no labels)")

    def compile(self, b) -> None:
        sig = b.need("signature", self)
        b.add(Node("data", "data.npz", NpzParams(data=self, inputs=sig.inputs, classes=_classes(sig),
                                                 calib_samples=self.calib_samples(b))))
        provide_splits(self, b, "data", ("calib", "eval"), labels=self.y_key is not None)


class NpzParams(StepParams):
    """Params of the ``data.npz`` step."""

    data: NpzData
    inputs: tuple[TensorSpec, ...]  # the model's
    classes: int | None = None  # a classifier's class count: labels must fall in 0..classes-1
    calib_samples: int
