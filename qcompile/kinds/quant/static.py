"""``quant.kind=static``: post-training static quantization (QDQ or QOperator) with onnxruntime.quantization.

Calibration is its own node, so options that do not change calibration (format, per-channel, weight type,
excluded nodes) reuse the stored ranges. The sensitivity of each node is a node too, and the fallback search
(``qcompile.builds.search``) drives plans of this section with more nodes kept in float.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator

from ...graph import Node, Ref, StepParams
from ..builder import Variant
from ..registry import register
from ..section import Kind, Section
from ._ort import check_op_types, model_default, preprocessed
from .exclude import Exclude, check_names


class Calibration(Section):
    """How activation ranges are calibrated (static quantization)."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    samples: PositiveInt = 256
    batch_size: PositiveInt = Field(16, description="most samples per calibration batch (the memory budget may "
                                    "take fewer); the ranges do not depend on it")
    memory_mb: PositiveInt | None = Field(
        None, description="most MiB of activations a calibration batch may hold (null: 1/32 of the machine's "
                          "memory, at most 256); the ranges do not depend on it")
    percentile: float = Field(99.999, gt=0, le=100, description="used by method=percentile")
    num_bins: int = Field(2048, ge=128, le=16384, description="histogram bins of entropy and percentile "
                          "(ORT's entropy default of 128 leaves one candidate threshold: the full range)")
    symmetric: bool = Field(False, description="force calibrated activation ranges symmetric around 0")


class Sensitivity(Section):
    """Which quantized nodes cost the most: each node's activation and weight SQNR against FP32 (ORT's
    qdq_loss_debug), in report.md and report.json."""

    enabled: bool = Field(False, description="add the sensitivity table to the report (always on with fallback)")
    samples: PositiveInt = Field(32, description="calibration samples the FP32 and INT8 activations are compared on")
    rank: Literal["local", "cumulative"] = Field(
        "local", description="local: the noise each node's own quantized inputs and output add (SQNR before vs "
                             "after their quantize/dequantize pair); cumulative: how far its output drifted from "
                             "FP32 (which grows with depth, so later nodes rank worse)")


class Fallback(Section):
    """Accuracy-aware fallback: when the variant fails its gate, keep the fewest nodes in float that pass it, in the
    sensitivity table's order. Every trial is an ordinary cached build step, so a search resumes and replays."""

    enabled: bool = False
    max_trials: PositiveInt = Field(48, description="most quantize-and-evaluate trials, the first (none in float) "
                                                     "and those of each row alone included")
    max_float_nodes: PositiveInt = Field(16, description="most nodes kept in float beyond quant.exclude")
    strategy: Literal["greedy", "bisect"] = Field(
        "bisect", description="greedy: add the next most sensitive node until the gate passes (one trial per node); "
                              "bisect: binary search over how many of the most sensitive nodes stay in float")
    rank: Literal["sensitivity", "measured"] = Field(
        "measured", description="the order nodes go to float: the sensitivity table's; or measured: first one "
                                   "trial per row with that row alone in float (stopping at one that passes), then "
                                   "rows by the metric they reached; sees what SQNR cannot, such as integer kernels "
                                   "that saturate, at one trial per row")


@register("quant")
class StaticQuant(Kind):
    """Post-training static quantization with onnxruntime.quantization."""

    kind: Literal["static"]
    format: Literal["qdq", "qoperator"] = "qdq"
    activation_type: Literal["auto", "uint8", "int8"] = Field(
        "auto", description="auto: the target's fast type (uint8 on x86 ORT CPU, int8 for TensorRT and ARM)")
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    calibration: Calibration = Calibration()
    op_types: list[str] | None | Literal["auto"] = Field(
        "auto", description="op types to quantize; null: every type ORT can quantize, so Relu/MaxPool stay int8 "
                            "between convolutions instead of bouncing through float; auto: what the model kind "
                            "recommends (transformer encoders: MatMul and Gemm, keeping the attention mask's "
                            "large negative bias out of shared uint8 ranges), else null")
    weight_matmuls_only: bool | None = Field(
        None, description="quantize only MatMuls with a constant weight, keeping those of two activations "
                          "(attention's scores and context) in float (null: what the model kind recommends, true for "
                          "transformer encoders; else false)")
    exclude: Exclude = Exclude()
    sensitivity: Sensitivity = Sensitivity()
    fallback: Fallback = Fallback()

    _ops = field_validator("op_types")(classmethod(lambda cls, v: v if v == "auto" else check_op_types(v)))

    def declare(self, b) -> None:
        b.provide("calib.samples", self.calibration.samples, self)

    def activation(self, b) -> str:
        """The activation type: the recipe's, or for ``auto`` the target's default (``host``: decided by the
        machine that runs the quantize step)."""
        if self.activation_type != "auto":
            return self.activation_type
        return b.need("quant.defaults", self, "the target's quantization defaults")["activation_type"]

    def compile(self, b) -> None:
        nodes = b.get("onnx.fp32.nodes")
        if self.exclude and nodes is not None:  # names knowable now (an ONNX file): checked before anything runs
            check_names(self.exclude, nodes())
        prep = preprocessed(b, self)
        op_types = model_default(b, "static", "op_types", self.op_types, None, unset="auto")
        b.add(Node("calibrate", "calibrate.ort",
                   CalibrateParams(**self.calibration.model_dump(), op_types=op_types),
                   inputs={"model": prep, "data": b.need("samples.calib", self, "calibration samples")},
                   publish={"ranges": "calibration.json"}))
        params = StaticQuantizeParams(quant=self, activation_type=self.activation(b), op_types=op_types,
                                      weight_matmuls_only=model_default(b, "static", "weight_matmuls_only",
                                                                        self.weight_matmuls_only, False),
                                      **_target_rules(b.get("quant.defaults") or {}))
        b.add(Node("quantize", "quantize.ort_static", params,
                   inputs={"model": prep, "names": Ref("optimize", "names"), "ranges": Ref("calibrate", "ranges")}))
        if self.sensitivity.enabled or self.fallback.enabled:
            b.add(Node("sensitivity", "sensitivity.ort_qdq", self.sensitivity,
                       inputs={"float": prep, "quantized": Ref("quantize", "model"), "names": Ref("optimize", "names"),
                               "data": b.need("samples.calib", self, "calibration samples")},
                       publish={"sensitivity": "sensitivity.json"}))
        b.add_variant(Variant("int8", Ref("quantize", "model"), scheme=params.scheme()))


class CalibrateParams(Calibration):
    """Params of the ``calibrate.ort`` step: the calibration section, and which op types' tensors get ranges."""

    op_types: list[str] | None  # the quant section's
    quantized_bins: int = 128  # ORT's num_quantized_bins for entropy and percentile


class StaticQuantizeParams(StepParams):
    """Params of the ``quantize.ort_static`` step: the section, with the activation type resolved (``host``: by
    the machine that runs the step) and the target's rules."""

    quant: StaticQuant
    activation_type: str
    op_types: list[str] | None  # resolved: the recipe's, or for auto the model's recommendation
    weight_matmuls_only: bool  # resolved likewise
    # From the target's quantization defaults (TensorRT: symmetric activations, zero points 0, float bias).
    activation_symmetric: bool = False
    quantize_bias: bool = True

    def scheme(self) -> dict[str, Any]:
        """How the variant was made, flat, for reports and the bundle."""
        q = self.quant
        return {"kind": "static", "step": "quantize.ort_static",
                **q.model_dump(mode="json", exclude={"kind", "activation_type", "calibration", "sensitivity",
                                                     "fallback"}),
                "activation_type": self.activation_type, "op_types": self.op_types,
                "weight_matmuls_only": self.weight_matmuls_only, "method": q.calibration.method,
                "activation_symmetric": self.activation_symmetric, "quantize_bias": self.quantize_bias}


def _target_rules(defaults: dict) -> dict:
    """What the target requires beyond the activation type (TensorRT: symmetric activations, float bias).

    Symmetry is applied when quantizing, not calibrating, so targets share one calibration node."""
    return {k: defaults[k] for k in ("activation_symmetric", "quantize_bias") if k in defaults}
