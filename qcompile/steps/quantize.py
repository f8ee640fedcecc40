"""Quantization with onnxruntime.quantization: static (from stored calibration ranges) or dynamic."""

from __future__ import annotations

from typing import Any

from ..cache.keys import cpu_isa
from ..kinds.quant._ort import ACTIVATION_FOR_ISA, HOST
from ..kinds.quant.dynamic import DynamicQuantizeParams
from ..kinds.quant.exclude import resolve
from ..kinds.quant.static import StaticQuantizeParams
from .base import Step, StepContext, register
from .calibrate import METHODS
from .quiet import quiet

# Shape inference cannot type the outputs of ORT's contrib ops (a fused transformer's Attention, BiasGelu):
# they are float tensors, which quantization must know to quantize what reads them (1 is TensorProto.FLOAT).
UNTYPED_AS_FLOAT = {"DefaultTensorType": 1}


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _excluded(ctx: StepContext, exclude, dynamic: bool = False) -> list[str]:
    """The optimized model's nodes to keep in float, from the FP32 names, patterns and op types of ``exclude``."""
    import json

    if not exclude:
        return []
    names = json.loads(ctx.inputs["names"].read_text())
    chosen = resolve(exclude, names)
    if dynamic:
        # quantize_dynamic first rewrites each Gemm named X into a MatMul named X_MatMul (and an Add), then matches
        # nodes_to_exclude against the new names.
        chosen += [f"{n}_MatMul" for n in chosen if names["optimized"].get(n, {}).get("op_type") == "Gemm"]
    return chosen


@register
class OrtStaticQuantizeStep(Step):
    """Static PTQ. Reads calibration ranges from the calibrate step instead of calibrating again."""

    kind = "quantize.ort_static"
    # 2: params hold the quant section; 3: exclusions by the FP32 model's names; 4: op types resolved from the model
    version = 4
    Params = StaticQuantizeParams
    inputs = ("model", "names", "ranges")
    outputs = {"model": "model.int8.onnx"}
    libraries = ("onnx", "onnxruntime")
    # The recipe's activation type reaches the key resolved (an explicit uint8 and an auto that means uint8 are the
    # same model); calibration reaches it as the ranges' digest, which records the method too.
    # The sensitivity table and the fallback search read this model; they change nothing in it.
    unkeyed = ("quant.activation_type", "quant.calibration", "quant.sensitivity", "quant.fallback", "quant.op_types",
               "quant.weight_matmuls_only")

    def host_facts(self, p: StaticQuantizeParams) -> dict[str, Any]:
        return {"isa": cpu_isa()} if p.activation_type == HOST else {}

    def run(self, ctx: StepContext, p: StaticQuantizeParams) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        q = p.quant
        excluded = _excluded(ctx, q.exclude)
        if p.weight_matmuls_only:
            excluded += [n for n in activation_matmuls(ctx.inputs["model"]) if n not in excluded]
        isa = cpu_isa()
        activation = ACTIVATION_FOR_ISA[isa] if p.activation_type == HOST else p.activation_type
        # The format takes a QuantFormat: passing a QuantType there (a common mistake) silently yields QDQ.
        fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[q.format]
        with quiet("onnxruntime"):
            quantize_static(
                str(ctx.inputs["model"]), str(ctx.out("model")), calibration_data_reader=None,
                calibration_cache_path=str(ctx.inputs["ranges"]),
                calibrate_method=getattr(CalibrationMethod, METHODS[q.calibration.method]),
                quant_format=fmt, activation_type=_quant_type(activation),
                weight_type=_quant_type(q.weight_type), per_channel=q.per_channel, reduce_range=q.reduce_range,
                op_types_to_quantize=p.op_types, nodes_to_exclude=excluded,
                extra_options={"ActivationSymmetric": p.activation_symmetric, "QuantizeBias": p.quantize_bias,
                               **UNTYPED_AS_FLOAT})
        chosen = {"activation_type": activation, **({"isa": isa} if p.activation_type == HOST else {})}
        return {**_summary(ctx), **chosen, "float_nodes": len(excluded)}


@register
class OrtDynamicQuantizeStep(Step):
    """``quantize_dynamic``: int8 weights, activations quantized at run time."""

    kind = "quantize.ort_dynamic"
    # 2: the params are the quant section; 3: exclusions by the FP32 model's names; 4: per-channel and op types
    # resolved from the model's recommendation
    version = 4
    Params = DynamicQuantizeParams
    inputs = ("model", "names")
    outputs = {"model": "model.int8.onnx"}
    libraries = ("onnx", "onnxruntime")
    # Reach the key resolved (an explicit value and an auto that means it are the same model).
    unkeyed = ("quant.per_channel", "quant.op_types")

    def run(self, ctx: StepContext, p: DynamicQuantizeParams) -> dict[str, Any]:
        from onnxruntime.quantization import quantize_dynamic

        q = p.quant
        excluded = _excluded(ctx, q.exclude, dynamic=True)
        with quiet("onnxruntime"):
            quantize_dynamic(str(ctx.inputs["model"]), str(ctx.out("model")),
                             weight_type=_quant_type(q.weight_type), per_channel=p.per_channel,
                             reduce_range=q.reduce_range, op_types_to_quantize=p.op_types,
                             nodes_to_exclude=excluded, extra_options=UNTYPED_AS_FLOAT)
        return _summary(ctx)


def activation_matmuls(path) -> list[str]:
    """MatMul nodes none of whose inputs is a constant (an initializer, or a Constant node's output): in a
    transformer, attention's scores and context, whose per-tensor activation ranges quantize badly.

    ORT's ``MatMulConstBOnly`` does the same for QOperator only; QDQ ignores it, so the nodes are excluded by name.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    const = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in const for i in n.input)]


def _summary(ctx: StepContext) -> dict[str, Any]:
    """Counts of quantized ops, so a recipe that quantized nothing is visible in the report."""
    import onnx

    nodes = onnx.load(str(ctx.out("model")), load_external_data=False).graph.node
    q_ops = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear"}
    count = sum(1 for n in nodes if n.op_type in q_ops)
    if count == 0:
        ctx.note("no operator was quantized (check quant.op_types and quant.exclude)")
    return {"nodes": len(nodes), "quant_nodes": count}
