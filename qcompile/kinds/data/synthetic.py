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
        self._fits(sig.inputs, self.calib_samples(b))
        b.add(Node("data", "data.synthetic",
                   SyntheticParams(data=self, inputs=sig.inputs, calib_samples=self.calib_samples(b))))
        provide_splits(self, b, "data", ("calib", "eval"), labels=False)


    def _fits(self, inputs: tuple[TensorSpec, ...], calib: int) -> None:
        """The step holds each split in memory: refuse, before anything runs, a count whose samples could not fit
        in half of this machine's memory (``eval_samples=1e13`` is a typo, not a workload)."""
        import os

        sizes = {"float32": 4, "float16": 2, "int64": 8, "int32": 4, "uint8": 1, "int8": 1, "bool": 1}
        row = sum(sizes[s.dtype] * _prod(s.sample_shape) for s in inputs)
        need = row * max(self.eval_samples, calib)
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 8 << 30
        if need > total // 2:
            key = "data.eval_samples" if self.eval_samples >= calib else "quant.calibration.samples"
            raise BadInput(f"asks {max(self.eval_samples, calib):,} synthetic samples of {row:,} bytes each: "
                           f"{need / 2**30:,.1f} GiB, more than half of this machine's {total / 2**30:.1f} GiB of "
                           "memory", key=key)


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


class SyntheticParams(StepParams):
    """Params of the ``data.synthetic`` step."""

    data: SyntheticData
    inputs: tuple[TensorSpec, ...]  # the model's
    calib_samples: int
