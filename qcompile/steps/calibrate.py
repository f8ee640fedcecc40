"""Calibration: activation ranges of an FP32 model over the calibration split, saved as their own artifact.

Ranges are collected batch by batch: ORT's histogram calibrators merge each batch into running histograms,
so memory stays at one batch of intermediate tensors instead of all of them (ResNet-50 with Entropy and
128 samples otherwise peaks near 15 GB).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadInput
from .arrays import count, fixed_batch, load_samples, model_batches
from .base import Step, StepContext, StepParams, register
from .quiet import quiet

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class CalibrateParams(StepParams):
    method: str
    batch_size: int
    percentile: float
    symmetric: bool
    op_types: list[str] | None


class _OneBatch:
    """A CalibrationDataReader over one batch (ORT's reader protocol: get_next until None)."""

    def __init__(self, feed: dict[str, Any]):
        self._feed: dict[str, Any] | None = feed

    def get_next(self):
        feed, self._feed = self._feed, None
        return feed


@register
class OrtCalibrate(Step):
    """Activation ranges of the pre-processed FP32 model over the calibration split."""

    kind = "calibrate.ort"
    version = 2  # 2: calibration.json written with sorted keys
    Params = CalibrateParams
    inputs = ("model", "data")
    outputs = {"ranges": "calibration.json"}
    libraries = ("onnx", "onnxruntime", "numpy")

    def run(self, ctx: StepContext, p: CalibrateParams) -> dict[str, Any]:
        from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

        inputs, _ = load_samples(ctx.inputs["data"])
        if count(inputs) == 0:
            raise BadInput("the calibration set is empty", key="quant.calibration.samples")
        options: dict[str, Any] = {"symmetric": p.symmetric}
        if p.method == "percentile":
            options["percentile"] = p.percentile
        with quiet("onnxruntime"):
            calibrator = create_calibrator(
                str(ctx.inputs["model"]), p.op_types, augmented_model_path=str(ctx.workdir / "augmented.onnx"),
                calibrate_method=getattr(CalibrationMethod, METHODS[p.method]), extra_options=options)
            inp = calibrator.model.graph.input[0]
            fixed = fixed_batch([d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim])
            chunks = model_batches(inputs, p.batch_size, fixed)
            for feed, _ in ctx.track(chunks, len(chunks), f"calibrate ({p.method})"):
                calibrator.collect_data(_OneBatch(feed))
            ranges = calibrator.compute_data()
        out = ctx.out("ranges")
        save_tensors_data(ranges, out)
        # ORT writes tensors in set-iteration order, which changes with the process's hash seed: sort the keys
        # so equal ranges always give equal bytes (and a reproduced build the same digest).
        out.write_text(json.dumps(json.loads(out.read_text()), sort_keys=True))
        return {"tensors": len(ranges.data), "samples": count(inputs), "method": p.method}
