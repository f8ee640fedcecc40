"""``data.kind=synthetic``: random tensors of the model's input shapes (latency and fidelity, never accuracy)."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from ...errors import BadInput
from ...graph import Node, StepParams
from ...signature import TensorSpec
from ..registry import register
from ._split import SplitData, provide_splits


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
        b.add(Node("data", "data.synthetic",
                   SyntheticParams(data=self, inputs=sig.inputs, calib_samples=self.calib_samples(b))))
        provide_splits(self, b, "data", ("calib", "eval"), labels=False)


class SyntheticParams(StepParams):
    """Params of the ``data.synthetic`` step."""

    data: SyntheticData
    inputs: tuple[TensorSpec, ...]  # the model's
    calib_samples: int
