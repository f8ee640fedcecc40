"""What the onnxruntime.quantization schemes share: the op-type check, the pre-processing node, and the fast
activation type of each instruction set (which CPU targets default to)."""

from __future__ import annotations

from ...graph import Node, Ref, StepParams

# The fast activation type for each ISA: x86 runs u8s8 kernels (VNNI, or AVX2's VPMADDUBSW); ARM prefers
# symmetric int8. Measured here on ResNet-50 at batch 1 (AVX512-VNNI): 6.2 ms with uint8 activations, 23.7 ms
# with int8 ones, 19.0 ms FP32 (benchmarks/resnet50_ort_cpu.py).
ACTIVATION_FOR_ISA = {"avx512_vnni": "uint8", "avx_vnni": "uint8", "avx2": "uint8", "x86": "uint8",
                      "arm64": "int8", "other": "int8"}
HOST = "host"  # activation_type resolved on the machine that runs the quantize step


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


class PreprocessParams(StepParams):
    """Params of the ``optimize.ort_preprocess`` step (no recipe option reaches it)."""

    skip_optimization: bool = False
    skip_symbolic_shape: bool = False


def preprocessed(b, by) -> Ref:
    """ORT's ``quant_pre_process`` of the FP32 model (shape inference, fusions), shared by every ORT scheme."""
    # A model kind may ask for less (symbolic shape inference fails on exported transformers' dynamic shapes).
    params = PreprocessParams(**((b.get("quant.model_defaults") or {}).get("preprocess") or {}))
    b.shared(Node("optimize", "optimize.ort_preprocess", params, inputs={"model": b.need("onnx.fp32", by)}))
    return Ref("optimize", "model")


def model_default(b, scheme: str, option: str, value, fallback, unset=None):
    """A quant option the recipe left to the model (``value`` is ``unset``: None, or ``"auto"`` where None means
    something): the model kind's recommendation for ``scheme`` (the ``quant.model_defaults`` port, e.g. per-channel
    weights for transformer encoders), else ``fallback``; an explicit value wins."""
    if value != unset:
        return value
    return ((b.get("quant.model_defaults") or {}).get(scheme) or {}).get(option, fallback)
