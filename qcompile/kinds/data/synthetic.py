"""``data.kind=synthetic``: random tensors of the model's input shapes (latency and fidelity, never accuracy)."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref
from ...steps import data as steps
from ..registry import register
from ._split import SplitData


@register("data")
class SyntheticData(SplitData):
    """Random tensors of the model's input shapes: for latency and fidelity only, never accuracy."""

    kind: Literal["synthetic"]
    eval_samples: PositiveInt = 32

    def compile(self, b) -> None:
        sig = b.need("signature", self)
        for spec in sig.inputs:
            if not all(isinstance(d, int) for d in spec.sample_shape):
                raise BadInput(f"input {spec.name!r} has dynamic axes {spec.sample_shape}; synthetic data needs a "
                               "concrete shape (set model.input_shape)", key="data.kind")
        b.add(Node("data", steps.SyntheticData.kind,
                   steps.SyntheticParams(inputs=sig.inputs, eval_samples=self.eval_samples,
                                         calib_samples=self.calib_samples(b), seed=self.seed)))
        b.provide("samples.calib", Ref("data", "calib"), self)
        b.provide("samples.eval", Ref("data", "eval"), self)
        b.provide("samples.labels", False, self)
