"""``data.kind=npz``: the user's own preprocessed samples in an .npz file (optionally with integer labels)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...graph import Node, Ref
from ...steps import data as steps
from ..registry import register
from ..section import UserFile
from ._split import SplitData


@register("data")
class NpzData(SplitData):
    """The user's own samples: an .npz file with inputs (and optionally integer labels)."""

    kind: Literal["npz"]
    path: UserFile
    x_key: str = Field("x", description="the array of a single-input model; several inputs read one array per name")
    y_key: str | None = "y"

    def compile(self, b) -> None:
        sig = b.need("signature", self)
        b.add(Node("data", steps.NpzData.kind,
                   steps.NpzParams(path=self.path, x_key=self.x_key, y_key=self.y_key, inputs=sig.inputs,
                                   eval_samples=self.eval_samples, calib_samples=self.calib_samples(b),
                                   seed=self.seed)))
        b.provide("samples.calib", Ref("data", "calib"), self)
        b.provide("samples.eval", Ref("data", "eval"), self)
