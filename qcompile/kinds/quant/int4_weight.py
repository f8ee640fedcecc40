"""``quant.kind=int4_weight``: weight-only INT4 with onnxruntime's ``MatMulNBitsQuantizer``.

Each MatMul whose second input is a constant 2-D weight becomes a ``com.microsoft`` MatMulNBits node holding that
weight as 4-bit integers in blocks along the input axis, one scale (and, asymmetric, one zero point) per block.
Activations stay float. The step quantizes the FP32 model as exported, not ORT's pre-processed one: with static
shapes, pre-processing fuses a 3-D MatMul and its bias Add into Reshape-Gemm-Reshape, and MatMulNBits takes no Gemm
(measured on a two-layer encoder exported by torch's dynamo exporter: 9 MatMuls before, none after).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref
from ..builder import Variant
from ..registry import register
from ..section import Kind, Section
from .exclude import Exclude, resolve

# What MatMulNBitsQuantizer turns into a block-quantized contrib op (onnxruntime 1.32): MatMul -> MatMulNBits,
# Gather (an embedding table) -> GatherBlockQuantized.
NBITS_OPS = {"MatMul": "MatMulNBits", "Gather": "GatherBlockQuantized"}


class Gptq(Section):
    """GPTQ: each weight is rounded input channel by input channel, the channels left corrected for the error so
    far, weighted by the Hessian of the layer's inputs over calibration samples."""

    # onnxruntime 1.32's GPTQ writes the same weights as its RTN: its error feedback reads the zero half of the upper
    # triangular inverse-Hessian factor (checked: the same weights for any Hessian; docs/recipes.md).
    samples: PositiveInt = Field(128, le=4000, description="calibration samples the layers' input statistics are "
                                                           "gathered on (from the data section's calibration split)")
    percdamp: float = Field(0.01, gt=0, le=1, description="dampening added to the Hessian's diagonal, as a fraction "
                                                          "of its mean (raise it when GPTQ fails on few samples)")
    actorder: bool = Field(False, description="quantize input channels in order of decreasing Hessian diagonal")


@register("quant")
class Int4WeightQuant(Kind):
    """Weight-only INT4 (onnxruntime MatMulNBits): 4-bit weights in blocks, float activations."""

    kind: Literal["int4_weight"]
    algorithm: Literal["default", "rtn", "hqq", "gptq"] = Field(
        "default", description="default: ORT's own blockwise min/max rounding (C++); rtn: round to nearest, "
                               "neural-compressor's; hqq: half-quadratic optimisation of scales and zero points "
                               "(asymmetric only; its float zero points ran 7-8x slower on ORT CPU; needs "
                               "torch); gptq: error-correcting rounding "
                               "over calibration samples (quant.gptq)")
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        32, description="weights along the input axis sharing one scale (the sizes ORT's kernels quantize): "
                        "smaller stays closer to FP32, larger gives a smaller file")
    symmetric: bool = Field(False, description="zero point fixed at 8 (no zero points stored); false: a zero point "
                                               "per block (a closer fit, slightly larger)")
    accuracy_level: int = Field(
        4, ge=0, le=4, description="the lowest precision MatMulNBits may compute in: 0 unset (the kernel's "
                                   "choice), 1 fp32, 2 fp16, 3 bf16, 4 int8 (activations quantized to int8 per "
                                   "block at run time: ORT CPU's fastest path, a little further from FP32)")
    op_types: list[Literal["MatMul", "Gather"]] | None = Field(
        None, min_length=1, description="what to quantize: MatMul (constant weights) and, with "
                                        "algorithm=default, Gather (embedding tables, raising the model to opset 21 "
                                        "for int4 tensors); null: what the model kind recommends (transformer "
                                        "encoders: both, with algorithm=default), else MatMul")
    exclude: Exclude = Exclude()
    gptq: Gptq = Gptq()

    def missing_requirements(self) -> dict[str, str]:
        """HQQ's solver runs in torch (the qcompile[torch] extra); the other algorithms need onnxruntime only."""
        import importlib.util

        return {"torch": "torch"} if self.algorithm == "hqq" and importlib.util.find_spec("torch") is None else {}

    def declare(self, b) -> None:
        if self.algorithm == "gptq":
            b.provide("calib.samples", self.gptq.samples, self)

    def compile(self, b) -> None:
        if self.op_types is None:
            from ._ort import model_default

            ops = model_default(b, "int4_weight", "op_types", None, ["MatMul"])
            ops = ops if self.algorithm == "default" else [op for op in ops if op != "Gather"]
            # The params are the section with what it left to the model resolved: null and the list it means
            # are the same model, and the step reads a list.
            return self.model_copy(update={"op_types": ops}).compile(b)
        if self.algorithm == "hqq" and self.symmetric:
            raise BadInput("algorithm=hqq fits asymmetric blocks only (its zero points are floats); set "
                           "quant.symmetric=false or pick another algorithm", key="quant.symmetric")
        if "Gather" in self.op_types and self.algorithm != "default":
            raise BadInput(f"only algorithm=default quantizes Gather (embedding tables); algorithm={self.algorithm} "
                           "takes MatMul only", key="quant.op_types")
        nodes = b.get("onnx.fp32.nodes")
        if nodes is not None:  # an ONNX file: what would be quantized is knowable before anything runs
            check_quantizable(self, nodes())
        inputs = {"model": b.need("onnx.fp32", self)}
        if self.algorithm == "gptq":
            inputs["data"] = b.need("samples.calib", self, "calibration samples")
        b.add(Node("quantize", "quantize.ort_int4", self, inputs=inputs))
        b.add_variant(Variant("int4", Ref("quantize", "model"), scheme=self.scheme()))

    def scheme(self) -> dict[str, Any]:
        """How the variant was made, flat, for reports and the bundle."""
        skip = {"kind"} | ({"gptq"} if self.algorithm != "gptq" else set())
        return {"kind": "int4_weight", "step": "quantize.ort_int4", **self.model_dump(mode="json", exclude=skip)}


def as_names_map(nodes: list[tuple[str, str]]) -> dict[str, Any]:
    """A ``names.json`` for a model quantized as it is (no pre-processing): every node is its own optimized node."""
    return {"nodes": [{"name": n, "op_type": op, "optimized": [n]} for n, op in nodes], "optimized": {}}


def candidates(q: Int4WeightQuant, nodes: list[tuple[str, str]]) -> list[str]:
    """Names of the nodes of ``q.op_types`` that ``q.exclude`` leaves to quantize (``nodes``: (name, op type))."""
    excluded = set(resolve(q.exclude, as_names_map(nodes))) if q.exclude else set()
    return [n for n, op in nodes if op in q.op_types and n not in excluded]


def nothing_to_quantize(q: Int4WeightQuant, ops: set[str], why: str) -> BadInput:
    """The bad input of a model int4 leaves unchanged, naming quant.kind (``ops``: the model's op types)."""
    wanted = " or ".join(q.op_types)
    hint = " (a 2-D nn.Linear exports as Gemm, which MatMulNBits does not take)" if "Gemm" in ops else ""
    return BadInput(f"int4_weight quantizes {wanted} nodes with a constant weight and {why}, so it would leave the "
                    f"model unchanged; its op types are {', '.join(sorted(ops))}{hint}", key="quant.kind")


def check_quantizable(q: Int4WeightQuant, nodes: list[tuple[str, str]]) -> None:
    """Refuse, before anything runs, exclusions that match nothing and a model with no node int4 could quantize."""
    if not candidates(q, nodes):
        outside = " outside quant.exclude" if q.exclude else ""
        raise nothing_to_quantize(q, {op for _, op in nodes}, f"model.fp32.onnx has none{outside}")
