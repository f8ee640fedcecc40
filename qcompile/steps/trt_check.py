"""A QDQ model checked against TensorRT's explicit-quantization rules, without TensorRT.

TensorRT 10/11 builds INT8 only from explicit Q/DQ (no calibrators, no precision flags). It takes symmetric
quantization only: every zero point a constant 0, scales positive constants, int8 (not uint8) Q/DQ, per-tensor
scales on activations and per-channel scales only on constant weights along their output-channel axis, and a
float bias (an int32 DequantizeLinear is an ORT-style quantized bias it does not take). QOperator ops
(QLinearConv, ConvInteger...) and dynamic quantization are ONNX Runtime's, not TensorRT's.

``check_qdq`` names every violating node, so a user can fix the recipe (``target=tensorrt`` picks TensorRT's
defaults) or exclude those nodes, before spending minutes on an engine build that fails or runs in FP32.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from ..errors import BadInput
from ..kinds.targets.tensorrt import TrtCheckParams
from .base import Step, StepContext, register

QDQ = ("QuantizeLinear", "DequantizeLinear")
# ONNX Runtime's integer operators: TensorRT parses none of them (it takes the QDQ format).
QOPERATOR = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
             "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
             "QLinearGlobalAveragePool", "QLinearConcat", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
# Q/DQ element types TensorRT 10/11 takes (int8; fp8 and int4 for weights on the GPUs that have them).
ALLOWED_TYPES = {"int8", "float8e4m3fn", "int4"}
# ONNX TensorProto data types by number, for the few a Q/DQ may carry.
_TYPES = {1: "float", 2: "uint8", 3: "int8", 6: "int32", 17: "float8e4m3fn", 21: "uint4", 22: "int4", 10: "float16"}


def _output_channel_axis(consumer, slot: int) -> int | None:
    """The output-channel axis of a weight at input ``slot`` of ``consumer`` (where per-channel scales may
    lie), or None when that input is not a weight TensorRT quantizes per channel."""
    attrs = {a.name: a for a in consumer.attribute}
    if consumer.op_type == "Conv" and slot == 1:
        return 0  # KCRS
    if consumer.op_type == "ConvTranspose" and slot == 1:
        return 1  # CKRS
    if consumer.op_type == "Gemm" and slot == 1:
        return 0 if attrs.get("transB") and attrs["transB"].i else 1
    if consumer.op_type == "MatMul" and slot == 1:
        return -1
    return None


def check_qdq(model) -> list[dict[str, Any]]:
    """TensorRT explicit-quantization violations of an ONNX model: one entry per violating node with its name,
    op type and the rule it breaks (empty list: TensorRT can take the model's quantization as it is)."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    for n in graph.node:  # Constant nodes are constants too
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    producer = {out: n for n in graph.node for out in n.output}
    problems: list[dict[str, Any]] = []

    def bad(node, rule: str) -> None:
        problems.append({"node": node.name or f"<unnamed {node.op_type}>", "op": node.op_type, "rule": rule})

    for node in graph.node:
        if node.op_type in QOPERATOR:
            bad(node, "ONNX Runtime QOperator op: TensorRT takes the QDQ format (quant.format=qdq)")
            continue
        if node.op_type not in QDQ:
            continue
        attrs = {a.name: a for a in node.attribute}
        scale_name = node.input[1] if len(node.input) > 1 else ""
        zp_name = node.input[2] if len(node.input) > 2 else ""
        scale = consts.get(scale_name)
        if scale is None:
            bad(node, f"scale {scale_name!r} is not a constant")
            continue
        s = numpy_helper.to_array(scale)
        if not (np.isfinite(s).all() and (s > 0).all()):
            bad(node, "scale is not positive and finite")
        # The quantized type: the zero point's, else output_dtype (opset 21), else ONNX's default uint8.
        if zp_name:
            zp = consts.get(zp_name)
            if zp is None:
                bad(node, f"zero point {zp_name!r} is not a constant")
                continue
            qtype = _TYPES.get(zp.data_type, str(zp.data_type))
            if qtype != "int32" and np.any(numpy_helper.to_array(zp).astype(np.float64) != 0):
                bad(node, "non-zero zero point (asymmetric quantization): TensorRT takes symmetric only")
        elif node.op_type == "QuantizeLinear" and "output_dtype" in attrs and attrs["output_dtype"].i:
            qtype = _TYPES.get(attrs["output_dtype"].i, str(attrs["output_dtype"].i))
        elif node.op_type == "DequantizeLinear" and node.input[0] in consts:
            qtype = _TYPES.get(consts[node.input[0]].data_type, "?")
        elif node.op_type == "DequantizeLinear" and node.input[0] in producer:
            continue  # the type of the QuantizeLinear that feeds it, which is checked itself
        else:
            qtype = "uint8"  # ONNX's default without a zero point
        if qtype == "int32":
            bad(node, "int32 DequantizeLinear (a quantized bias): TensorRT takes a float bias")
            continue
        if qtype not in ALLOWED_TYPES:
            bad(node, f"{qtype} quantization: TensorRT takes int8 (symmetric, zero point 0)")
        if attrs.get("block_size") and attrs["block_size"].i:
            if node.input[0] not in consts:
                bad(node, "block quantization of an activation: TensorRT blocks weights only")
            continue
        if s.size > 1:
            # Per-channel: only a constant weight, along the output channels of the op that consumes it.
            weight = node.input[0] if node.op_type == "DequantizeLinear" else None
            if weight not in consts:
                bad(node, "per-channel scale on an activation: TensorRT takes per-tensor activation scales")
                continue
            axis = attrs["axis"].i if "axis" in attrs else 1
            rank = len(consts[weight].dims)
            for consumer, slot in consumers.get(node.output[0], []):
                want = _output_channel_axis(consumer, slot)
                if want is None or axis % rank != want % rank:
                    bad(node, f"per-channel axis {axis} does not match the output channels of "
                              f"{consumer.op_type} {consumer.name!r}")
                    break
    return problems


def summary(problems: list[dict[str, Any]], limit: int = 8) -> str:
    """One line naming the violating nodes (the first ``limit``) and the rules they break."""
    rules: dict[str, list[str]] = {}
    for p in problems:
        rules.setdefault(p["rule"], []).append(p["node"])
    parts = [f"{rule}: {', '.join(nodes[:limit])}" + (f" (+{len(nodes) - limit} more)" if len(nodes) > limit
                                                      else "") for rule, nodes in rules.items()]
    return f"{len(problems)} node(s) break TensorRT's Q/DQ rules — " + "; ".join(parts)


@register
class TrtQdqCheckStep(Step):
    """Checks a variant's model against TensorRT's Q/DQ rules; passes the model on unchanged.

    A violation is a warning in the report, or with ``target.strict=true`` bad input listing the nodes.
    """

    kind = "check.tensorrt_qdq"
    version = 2  # 2: params hold the target section
    Params = TrtCheckParams
    unkeyed = ("target.engine", "target.profile_batch", "target.workspace_mb", "target.optimization_level",
               "target.timing_cache")
    inputs = ("model",)
    outputs = {"model": "model.onnx", "violations": "trt_check.json"}
    libraries = ("onnx", "numpy")

    def run(self, ctx: StepContext, p: TrtCheckParams) -> dict[str, Any]:
        import onnx

        problems = check_qdq(onnx.load(str(ctx.inputs["model"]), load_external_data=False))
        if problems and p.target.strict:
            raise BadInput(summary(problems) + " (target.strict=true; target=tensorrt sets TensorRT's "
                           "quantization defaults)", key="target.strict")
        if problems:
            ctx.note(summary(problems) + "; TensorRT would reject the engine build or run these in float")
        shutil.copyfile(ctx.inputs["model"], ctx.out("model"))
        ctx.out("violations").write_text(json.dumps(problems, indent=1))
        return {"violations": len(problems), "passed": not problems}
