"""``target.kind=ort_cpu``: ONNX Runtime on a CPU. The ISA picks the fast int8 types; evaluate and benchmark use
its session settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..quant._ort import ACTIVATION_FOR_ISA, HOST
from ..registry import register
from ..section import Kind


@register("target")
class OrtCpuTarget(Kind):
    """ONNX Runtime on a CPU."""

    kind: Literal["ort_cpu"]
    isa: Literal["auto", "avx512_vnni", "avx2", "arm64"] = Field(
        "auto", description="the deployment CPU's instruction set, which picks the fast int8 types (x86: uint8 "
                            "activations, ARM: int8); auto: the machine that runs the quantize step")
    intra_op_threads: int = Field(0, ge=0, description="0 lets ORT choose")
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"

    def declare(self, b) -> None:
        activation = HOST if self.isa == "auto" else ACTIVATION_FOR_ISA[self.isa]
        b.provide("quant.defaults", {"activation_type": activation, "isa": self.isa}, self)
        b.provide("runtime", {"providers": ["CPUExecutionProvider"], "threads": self.intra_op_threads,
                              "level": self.graph_optimization_level}, self)
