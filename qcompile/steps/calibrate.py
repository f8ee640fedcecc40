"""Calibration: activation ranges of an FP32 model over the calibration split, saved as their own artifact.

Memory is bounded by a budget, not by the batch size or the number of samples: samples are read from disk
batch by batch, and a batch holds at most ``memory_mb`` of activations (one sample when even one is larger).
MinMax runs ORT's own MinMax calibrator batch by batch (min and max merge exactly, so the ranges equal ORT's
one-shot ones bit for bit). Entropy and Percentile count each tensor on a fine power-of-two grid
(``histograms``), which gives the histogram one pass over all samples would, then apply ORT's threshold rules.

Because neither result depends on how samples are grouped, the batch size and the budget stay out of the
step's key: changing them, or building on a machine with less memory, reuses the stored ranges.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import BadInput
from ..kinds.quant.static import CalibrateParams
from .arrays import SampleFile, batches, fixed_batch, pad_batch
from .base import Step, StepContext, register
from .quiet import quiet

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
MiB = 1 << 20


def auto_budget_mb() -> int:
    """The default activation budget: 1/32 of physical memory, at most 256 MiB (batching beyond a few samples
    gains nothing on CPU: ResNet-50 calibrates as fast one sample at a time as 16, at a sixth of the memory)."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return max(32, min(256, total // 32 // MiB))


def _session(path: str):
    """A session without graph optimisations, as ORT's calibrators run it (the activations are the ones ORT
    would see).

    ORT's memory arena stays on: it keeps the largest batch's memory for the session's life, which was the
    problem when batches were unbounded; with the batch held to the budget it costs little (ResNet-50, 128
    samples, default budget: 750 MB peak against 727 MB without) and saves the page faults of fresh pages for
    every batch (MinMax 24.9 -> 21.4 s, ORT's own calibrator 21.1 s).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def activation_bytes_per_sample(model, feed: dict[str, Any]) -> int:
    """Bytes of every float tensor in ``model`` for one sample: the most a batch's activations can hold.

    Shapes come from the model's inferred value_info; a symbolic axis takes its size in ``feed`` (a
    sequence length) or 1 (the batch axis).
    """
    sizes: dict[str, int] = {}
    for inp in model.graph.input:
        if inp.name in feed:
            for d, n in zip(inp.type.tensor_type.shape.dim[1:], feed[inp.name].shape[1:]):
                if d.dim_param:
                    sizes[d.dim_param] = int(n)
    itemsize = {1: 4, 10: 2, 11: 8, 16: 2}  # float, float16, double, bfloat16
    total, seen = 0, set()
    for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        t = vi.type.tensor_type
        if vi.name in seen or t.elem_type not in itemsize or not t.HasField("shape"):
            continue
        seen.add(vi.name)
        n = 1
        for k, d in enumerate(t.shape.dim):
            n *= d.dim_value if d.dim_value > 0 else (sizes.get(d.dim_param, 1) if k else 1)
        total += n * itemsize[t.elem_type]
    return total


@register
class OrtCalibrateStep(Step):
    """Activation ranges of the pre-processed FP32 model over the calibration split."""

    kind = "calibrate.ort"
    # 3: bounded memory; histograms independent of batching; 2048 bins for entropy by default.
    # 4: a Relu's histogram derived from its input's, on the input's grid (can be one step coarser).
    version = 4
    Params = CalibrateParams
    inputs = ("model", "data")
    outputs = {"ranges": "calibration.json"}
    libraries = ("onnx", "onnxruntime", "numpy")
    # Ranges do not depend on how samples are grouped (see the module docstring; tests check it); the sample count
    # reaches the key as the calibration split's digest.
    unkeyed = ("batch_size", "memory_mb", "samples")

    def run(self, ctx: StepContext, p: CalibrateParams) -> dict[str, Any]:
        from onnxruntime.quantization.calibrate import HistogramCalibrater, MinMaxCalibrater, save_tensors_data

        samples = SampleFile(ctx.inputs["data"])
        if samples.count == 0:
            raise BadInput("the calibration set is empty", key="quant.calibration.samples")
        budget = (p.memory_mb or auto_budget_mb()) * MiB
        augmented = str(ctx.workdir / "augmented.onnx")
        with quiet("onnxruntime"):
            # ORT builds the augmented model (MinMax: ReduceMin/ReduceMax per tensor; histograms: every tensor
            # as an output); the session that runs it is ours.
            if p.method == "minmax":
                calibrator = MinMaxCalibrater(str(ctx.inputs["model"]), p.op_types, augmented_model_path=augmented,
                                              symmetric=p.symmetric)
            else:
                calibrator = HistogramCalibrater(str(ctx.inputs["model"]), p.op_types,
                                                 augmented_model_path=augmented, method=p.method,
                                                 symmetric=p.symmetric)
            calibrator.augment_graph()
            fixed = fixed_batch([d.dim_value or d.dim_param for d in
                                 calibrator.model.graph.input[0].type.tensor_type.shape.dim])
            first = samples.batch(0, 1)
            per_sample = activation_bytes_per_sample(calibrator.model, first)
            relus = [(n.input[0], n.output[0]) for n in calibrator.model.graph.node if n.op_type == "Relu"]
            calibrator.model = None  # the session reads the augmented file; the proto's weights are dead weight
            size = fixed or max(1, min(p.batch_size, budget // max(per_sample, 1)))
            session = _session(calibrator.augmented_model_path)
            if p.method == "minmax":
                calibrator.infer_session = session
                ranges = self._minmax(ctx, calibrator, samples, size, fixed)
            else:
                ranges = self._histograms(ctx, p, calibrator, session, samples, size, fixed, relus)
        out = ctx.out("ranges")
        save_tensors_data(ranges, out)
        # ORT writes tensors in set-iteration order, which changes with the process's hash seed: sort the keys
        # so equal ranges always give equal bytes (and a reproduced build the same digest).
        out.write_text(json.dumps(json.loads(out.read_text()), sort_keys=True))
        return {"tensors": len(ranges.data), "samples": samples.count, "method": p.method, "batch": size,
                "activation_mb_per_sample": round(per_sample / MiB, 2), "budget_mb": budget // MiB}

    def _minmax(self, ctx, calibrator, samples: SampleFile, size: int, fixed: int | None):
        chunks = batches(samples.count, size)
        for a, b in ctx.track(chunks, len(chunks), "calibrate (minmax)"):
            calibrator.collect_data(_OneBatch(pad_batch(samples.batch(a, b), fixed)))
        return calibrator.compute_data()

    def _histograms(self, ctx, p: CalibrateParams, calibrator, session, samples: SampleFile, size: int,
                    fixed: int | None, relus: list[tuple[str, str]]):
        from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, TensorData, TensorsData

        from .histograms import FineHistogram, entropy_threshold

        names = [o.name for o in session.get_outputs() if o.name in calibrator.tensors_to_calibrate]
        # A Relu's output histogram follows from its input's (FineHistogram.relu): ResNet-50 has 49 of them,
        # a third of all values, which then are neither fetched from ORT nor counted.
        derived = [(i, o) for i, o in relus if i in names and o in names]
        counted = [n for n in names if n not in {o for _, o in derived}]
        absolute = p.method == "percentile" and p.symmetric
        hists = {n: FineHistogram(track_abs_min=absolute) for n in counted}
        runner = _BoundRunner(session, counted)
        chunks = batches(samples.count, size)
        # Counting is numpy work that releases the GIL for most of its time: tensors are counted in parallel
        # threads (each tensor's histogram by one thread at a time, each thread with its own scratch arrays).
        local = threading.local()

        def count(pair) -> None:
            if not hasattr(local, "scratch"):
                local.scratch = {}
            hists[pair[0]].update(pair[1], local.scratch)

        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            for a, b in ctx.track(chunks, len(chunks), f"calibrate ({p.method})"):
                feed = pad_batch(samples.batch(a, b), fixed)
                values = runner.run(feed, rows=b - a)
                # Largest first, so the last tensor to finish is a small one.
                list(pool.map(count, sorted(zip(counted, values), key=lambda nv: -nv[1].size)))
        for i, o in derived:  # in graph order: a Relu of a Relu finds its input already derived
            hists[o] = hists[i].relu()
        empty = [n for n, h in hists.items() if h.counts is None]
        if empty:
            raise BadInput(f"calibration saw no finite value in {empty[:3]}", key="quant.calibration")
        if p.method == "entropy":
            cuts = {}
            for n, h in hists.items():
                hist, edges, lo, hi, _ = h.signed(p.num_bins)
                cuts[n] = entropy_threshold(hist, edges, lo, hi, p.quantized_bins)
            method = CalibrationMethod.Entropy
        else:
            collector = HistogramCollector(method="percentile", symmetric=p.symmetric, num_bins=p.num_bins,
                                           num_quantized_bins=p.quantized_bins, percentile=p.percentile,
                                           scenario="same")
            collector.histogram_dict = {n: (h.absolute(p.num_bins) if absolute else h.signed(p.num_bins))
                                        for n, h in hists.items()}
            cuts = {n: v[:2] for n, v in collector.compute_percentile().items()}  # its prints: `quiet` in run
            method = CalibrationMethod.Percentile
        # Only the range goes to the quantizer; the histograms would make the artifact megabytes of JSON.
        return TensorsData(method, {n: TensorData(lowest=lo, highest=hi) for n, (lo, hi) in cuts.items()})


class _OneBatch:
    """A CalibrationDataReader over one batch (ORT's reader protocol: get_next until None)."""

    def __init__(self, feed: dict[str, Any]):
        self._feed: dict[str, Any] | None = feed

    def get_next(self):
        feed, self._feed = self._feed, None
        return feed


class _BoundRunner:
    """Runs the histogram model with its outputs written into buffers allocated once.

    Every tensor of every sample comes out of this model (about 100 MB per ResNet-50 sample): fresh arrays for
    each batch would cost page faults and a copy, more than the counting itself. A graph input asked for as an
    output is taken from the feed: ORT does not write it into a bound buffer.
    """

    def __init__(self, session, names: list[str]):
        inputs = {i.name for i in session.get_inputs()}
        self.session, self.names = session, names
        self.computed = [n for n in names if n not in inputs]
        self._buffers: dict[int, list[Any]] = {}

    def run(self, feed: dict[str, Any], rows: int) -> list[Any]:
        """Every name's value for this batch, cut to its first ``rows`` samples (a padded tail)."""
        import numpy as np
        import onnxruntime as ort

        n = len(next(iter(feed.values())))
        bufs = self._buffers.get(n)
        if bufs is None:  # first batch of this size: let ORT allocate, then keep arrays of these shapes
            outs = self.session.run(self.computed, feed)
            # ORT's fresh arrays become the buffers it writes the next batches into.
            bufs = [np.ascontiguousarray(o) for o in outs]
            self._buffers = {n: bufs}
        else:
            binding = self.session.io_binding()
            for name, value in feed.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            for name, buf in zip(self.computed, bufs):
                binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buf))
            self.session.run_with_iobinding(binding)
        values = dict(zip(self.computed, bufs))
        values.update((k, v) for k, v in feed.items() if k in self.names)
        return [v[:rows] if v.ndim and v.shape[0] == n else v for v in (values[k] for k in self.names)]
