"""What transformer encoders recommend for the quant options a recipe leaves unset, whichever kind brings the model
(a Hugging Face folder, or an ONNX file of one exported by hand)."""

from __future__ import annotations

from typing import Any

from ...signature import Signature

# Measured on all-MiniLM-L6-v2 (benchmarks/RESULTS.md): per-tensor int8 weights lose 0.045 of cosine to FP32 where
# per-channel ones lose 0.008; the word embeddings (a Gather) are half the model's bytes and cost nothing measurable
# in int8; the fused ops (Attention, EmbedLayerNormalization) quantize dynamically. A static scheme over every op
# type puts the attention mask's large negative bias into one uint8 range with the scores (a hand-exported
# two-input transformer fell from 88% to 21%): only MatMuls with a weight are quantized statically.
ENCODER_QUANT_DEFAULTS: dict[str, Any] = {
    "dynamic": {"per_channel": True,
                "op_types": ["MatMul", "Gemm", "Gather", "Attention", "EmbedLayerNormalization"]},
    "static": {"op_types": ["MatMul", "Gemm"], "weight_matmuls_only": True},
    "int4_weight": {"op_types": ["MatMul", "Gather"]},
    # ORT's symbolic shape inference cannot follow an exported sequence axis through attention ("Incomplete
    # symbolic shape inference"); ONNX's own shape inference still runs.
    "preprocess": {"skip_symbolic_shape": True},
}


def is_token_model(sig: Signature) -> bool:
    """A model fed token ids with an attention mask: a transformer."""
    return any(t.name == "attention_mask" and not t.is_float for t in sig.inputs)
