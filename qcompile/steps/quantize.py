"""Quantization with onnxruntime.quantization: static (from stored calibration ranges) or dynamic."""

from __future__ import annotations

from typing import Any

from ..cache.keys import cpu_isa
from ..errors import BadInput
from .base import Step, StepContext, StepParams, register
from .calibrate import METHODS
from .quiet import quiet


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _check_nodes(model_path, names: list[str]) -> None:
    import onnx

    if not names:
        return
    present = {n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node}
    missing = [n for n in names if n not in present]
    if missing:
        sample = ", ".join(sorted(present)[:5])
        raise BadInput(f"no node named {missing} in the model (nodes are named like: {sample}; "
                       "see `qcompile plan` or netron)", key="quant.exclude_nodes")


# The fast activation type for each ISA: x86 runs u8s8 kernels (VNNI, or AVX2's VPMADDUBSW); ARM prefers
# symmetric int8. Measured here on ResNet-50 at batch 1 (AVX512-VNNI): 6.2 ms with uint8 activations, 23.7 ms
# with int8 ones, 19.0 ms FP32 (benchmarks/resnet50_ort_cpu.py).
ACTIVATION_FOR_ISA = {"avx512_vnni": "uint8", "avx_vnni": "uint8", "avx2": "uint8", "x86": "uint8",
                      "arm64": "int8", "other": "int8"}
HOST = "host"  # activation_type resolved on the machine that runs the step


class StaticParams(StepParams):
    format: str
    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    op_types: list[str] | None
    exclude_nodes: list[str]
    method: str
    # From the target's quantization defaults (TensorRT: symmetric activations, zero points 0, float bias).
    activation_symmetric: bool = False
    quantize_bias: bool = True


@register
class OrtStaticQuantize(Step):
    """Static PTQ. Reads calibration ranges from the calibrate step instead of calibrating again."""

    kind = "quantize.ort_static"
    Params = StaticParams
    inputs = ("model", "ranges")
    outputs = {"model": "model.int8.onnx"}
    libraries = ("onnx", "onnxruntime")

    def host_facts(self, p: StaticParams) -> dict[str, Any]:
        return {"isa": cpu_isa()} if p.activation_type == HOST else {}

    def run(self, ctx: StepContext, p: StaticParams) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        _check_nodes(ctx.inputs["model"], p.exclude_nodes)
        isa = cpu_isa()
        activation = ACTIVATION_FOR_ISA[isa] if p.activation_type == HOST else p.activation_type
        # The format takes a QuantFormat: passing a QuantType there (a common mistake) silently yields QDQ.
        fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[p.format]
        with quiet("onnxruntime"):
            quantize_static(
                str(ctx.inputs["model"]), str(ctx.out("model")), calibration_data_reader=None,
                calibration_cache_path=str(ctx.inputs["ranges"]),
                calibrate_method=getattr(CalibrationMethod, METHODS[p.method]),
                quant_format=fmt, activation_type=_quant_type(activation),
                weight_type=_quant_type(p.weight_type), per_channel=p.per_channel, reduce_range=p.reduce_range,
                op_types_to_quantize=p.op_types, nodes_to_exclude=p.exclude_nodes,
                extra_options={"ActivationSymmetric": p.activation_symmetric, "QuantizeBias": p.quantize_bias})
        chosen = {"activation_type": activation, **({"isa": isa} if p.activation_type == HOST else {})}
        return {**_summary(ctx), **chosen}


class DynamicParams(StepParams):
    weight_type: str
    per_channel: bool
    reduce_range: bool
    op_types: list[str] | None
    exclude_nodes: list[str]


@register
class OrtDynamicQuantize(Step):
    """``quantize_dynamic``: int8 weights, activations quantized at run time."""

    kind = "quantize.ort_dynamic"
    Params = DynamicParams
    inputs = ("model",)
    outputs = {"model": "model.int8.onnx"}
    libraries = ("onnx", "onnxruntime")

    def run(self, ctx: StepContext, p: DynamicParams) -> dict[str, Any]:
        from onnxruntime.quantization import quantize_dynamic

        _check_nodes(ctx.inputs["model"], p.exclude_nodes)
        with quiet("onnxruntime"):
            quantize_dynamic(str(ctx.inputs["model"]), str(ctx.out("model")),
                             weight_type=_quant_type(p.weight_type), per_channel=p.per_channel,
                             reduce_range=p.reduce_range, op_types_to_quantize=p.op_types,
                             nodes_to_exclude=p.exclude_nodes)
        return _summary(ctx)


def _summary(ctx: StepContext) -> dict[str, Any]:
    """Counts of quantized ops, so a recipe that quantized nothing is visible in the report."""
    import onnx

    nodes = onnx.load(str(ctx.out("model")), load_external_data=False).graph.node
    q_ops = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear"}
    count = sum(1 for n in nodes if n.op_type in q_ops)
    if count == 0:
        ctx.note("no operator was quantized (check quant.op_types and quant.exclude_nodes)")
    return {"nodes": len(nodes), "quant_nodes": count}
