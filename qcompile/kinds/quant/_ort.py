"""What the onnxruntime.quantization schemes share: the op-type check and the pre-processing node."""

from __future__ import annotations

from ...graph import Node, Ref
from ...steps import optimize


def check_op_types(ops: list[str] | None) -> list[str] | None:
    """Refuse op types onnxruntime cannot quantize (listing those it can)."""
    if ops is None:
        return None
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    known = set(QDQRegistry) | set(QLinearOpsRegistry) | set(IntegerOpsRegistry)
    bad = [op for op in ops if op not in known]
    if bad:
        raise ValueError(f"unknown op type(s) {bad}; onnxruntime can quantize: {', '.join(sorted(known))}")
    return ops


def preprocessed(b, by) -> Ref:
    """ORT's ``quant_pre_process`` of the FP32 model (shape inference, fusions), shared by every ORT scheme."""
    b.shared(Node("optimize", optimize.OrtPreprocess.kind, optimize.PreprocessParams(),
                  inputs={"model": b.need("onnx.fp32", by)}))
    return Ref("optimize", "model")
