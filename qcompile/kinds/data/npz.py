"""``data.kind=npz``: the user's own preprocessed samples in an .npz file (optionally with integer labels)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...graph import Node, Ref
from ...steps import data as steps
from ..registry import register
from ..section import UserFile
from ._split import SplitData


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
        b.add(Node("data", steps.NpzData.kind,
                   steps.NpzParams(path=self.path, x_key=self.x_key, y_key=self.y_key, inputs=sig.inputs,
                                   classes=_classes(sig),
                                   eval_samples=self.eval_samples, calib_samples=self.calib_samples(b),
                                   seed=self.seed)))
        b.provide("samples.calib", Ref("data", "calib"), self)
        b.provide("samples.eval", Ref("data", "eval"), self)
        b.provide("samples.labels", self.y_key is not None, self)
