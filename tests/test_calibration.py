"""Calibration under a memory budget: MinMax equals ORT's one-shot ranges bit for bit, Entropy and Percentile
stay within 1% of one-shot collection, no result depends on the batch size or the budget, and the budget is
honoured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompile.steps.arrays import save_samples
from qcompile.steps.base import StepContext
from qcompile.steps.calibrate import CalibrateParams, OrtCalibrateStep, activation_bytes_per_sample
from qcompile.steps.histograms import FineHistogram, entropy_threshold


def _model(path: Path) -> Path:
    """A small residual conv net (Conv, Relu, Add, pooling, Gemm) with seeded random weights."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 8, 8, 3, 3), init("b2", 8), init("w3", 10, 8),
         init("b3", 10)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 3, 16, 16)).astype(np.float32)
    x[7, 1, 3, 3] = 25.0  # an outlier: entropy and percentile must clip it, and a late batch widens the range
    save_samples(d / "calib.npz", {"x": x})
    return _model(d / "net.onnx"), d / "calib.npz", x


def _calibrate(setup, tmp_path: Path, **kw) -> tuple[dict, dict]:
    model, data, _ = setup
    work = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    params = CalibrateParams(**{"method": "minmax", "batch_size": 16, "percentile": 99.9, "symmetric": False,
                                "op_types": None, "num_bins": 512, **kw})
    ctx = StepContext(inputs={"model": model, "data": data}, workdir=work, outputs={"ranges": "calibration.json"})
    result = OrtCalibrateStep().run(ctx, params)
    return json.loads(ctx.out("ranges").read_text()), result


def _ranges(doc: dict) -> dict[str, tuple[float, float]]:
    def value(v):
        return float(np.asarray(v["data"] if isinstance(v, dict) else v).reshape(-1)[0])

    return {k: (value(v["lowest"]), value(v["highest"])) for k, v in doc["data"].items()}


def _one_shot(setup, tmp_path: Path, method: str, **options) -> dict[str, tuple[float, float]]:
    """ORT's own calibrator fed every sample in one collect_data call, as quantize_static does."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    model, _, x = setup
    cal = create_calibrator(str(model), None, augmented_model_path=str(tmp_path / f"aug-{method}.onnx"),
                            calibrate_method=getattr(CalibrationMethod, method), extra_options=options)

    class Reader:
        def __init__(self):
            self.batches = iter([{"x": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.batches, None)

    cal.collect_data(Reader())
    return {k: (float(np.asarray(v.range_value[0]).reshape(-1)[0]), float(np.asarray(v.range_value[1]).reshape(-1)[0]))
            for k, v in cal.compute_data().data.items()}


def test_minmax_equals_ort_one_shot_bit_for_bit(setup, tmp_path):
    ours, result = _calibrate(setup, tmp_path, memory_mb=1, batch_size=64)
    assert _ranges(ours) == _one_shot(setup, tmp_path, "MinMax")
    assert result["samples"] == 40


@pytest.mark.parametrize("method,symmetric", [("entropy", False), ("percentile", False), ("percentile", True)])
def test_histogram_methods_within_one_percent_of_one_shot(setup, tmp_path, method, symmetric):
    ours, _ = _calibrate(setup, tmp_path, method=method, symmetric=symmetric, batch_size=4)
    options = {"num_bins": 512, "symmetric": symmetric, "percentile": 99.9}
    ref = _one_shot(setup, tmp_path, method.capitalize(), **options)
    got = _ranges(ours)
    assert got.keys() == ref.keys()
    for name, (lo, hi) in ref.items():
        scale = max(abs(lo), abs(hi))
        assert abs(got[name][0] - lo) <= 0.01 * scale and abs(got[name][1] - hi) <= 0.01 * scale, name
    # the outlier is clipped: these are not the min/max ranges
    minmax = _one_shot(setup, tmp_path, "MinMax")
    assert got["x"][1] < 0.5 * minmax["x"][1]


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_ranges_do_not_depend_on_batch_size_or_budget(setup, tmp_path, method):
    docs = [_calibrate(setup, tmp_path, method=method, batch_size=bs, memory_mb=mb)[0]
            for bs, mb in [(1, None), (7, None), (64, None), (64, 1)]]
    assert all(d == docs[0] for d in docs[1:])


def test_budget_is_honoured(setup, tmp_path):
    model, _, x = setup
    per_sample = activation_bytes_per_sample(onnx.shape_inference.infer_shapes(onnx.load(str(model))), {"x": x[:1]})
    assert per_sample >= 3 * 16 * 16 * 4 + 3 * 8 * 16 * 16 * 4  # input and the conv/relu/add activations
    budget_mb = 1
    _, result = _calibrate(setup, tmp_path, batch_size=1000, memory_mb=budget_mb)
    assert result["batch"] == (budget_mb << 20) // per_sample < 1000
    assert result["batch"] * per_sample <= budget_mb << 20
    _, small = _calibrate(setup, tmp_path, batch_size=3, memory_mb=budget_mb)
    assert small["batch"] == 3


def test_batching_stays_out_of_the_key():
    from qcompile.graph import Node
    from qcompile.run.scheduler import key_material
    from qcompile.steps.base import get_step

    step = get_step(OrtCalibrateStep.kind)

    def key(**kw):
        params = CalibrateParams(**{"method": "minmax", "batch_size": 16, "percentile": 99.9, "symmetric": False,
                                    "op_types": None, **kw})
        return key_material(Node("calibrate", step.kind, params), step, {"model": "a", "data": "b"}, None)

    assert key() == key(batch_size=1, memory_mb=64)
    assert key() != key(method="entropy")
    assert key() != key(num_bins=1024)


def test_fine_histogram_coarsens_exactly():
    """Counting in two batches (the second widens the range) gives the counts of one pass over both."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal(10_000).astype(np.float32)
    b = (rng.standard_normal(10_000) * 50).astype(np.float32)
    one, two = FineHistogram(), FineHistogram()
    one.update(np.concatenate([a, b]), {})
    two.update(a, {})
    two.update(b, {})
    assert one.exp == two.exp and np.array_equal(one.counts, two.counts) and one.total == two.total == 20_000
    hist, edges, lo, hi, t = two.signed(256)
    ref, ref_edges = np.histogram(np.concatenate([a, b]), 256, range=(-t, t))
    assert np.array_equal(edges, ref_edges) and hist.sum() == 20_000
    assert np.abs(hist - ref).max() <= 0.02 * ref.max()


def test_vectorised_entropy_search_matches_ort():
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(3)
    collector = HistogramCollector("entropy", False, 512, 128, 99.99, "same")
    for trial in range(4):
        data = (rng.standard_normal(50_000) * (trial + 1)).astype(np.float32)
        if trial % 2:
            data = np.concatenate([np.maximum(data, 0), np.float32([40.0, -30.0])])
        t = np.float32(max(abs(data.min()), abs(data.max())))
        hist, edges = np.histogram(data, 512, range=(-t, t))
        ref = collector.get_entropy_threshold((hist, edges, data.min(), data.max(), t), 128)
        got = entropy_threshold(hist, edges, data.min(), data.max(), 128)
        assert (float(got[0]), float(got[1])) == (float(ref[0]), float(ref[1]))


def test_relu_histogram_follows_from_its_input():
    """The derived Relu histogram equals counting max(x, 0) directly, brought to the input's grid."""
    from qcompile.steps.histograms import _coarsen

    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(20_000) * 3, rng.standard_normal(20_000)]).astype(np.float32)
    x[:5] = -40.0  # a negative tail wider than the positive side: the input's grid is coarser
    for track in (False, True):
        source, direct = FineHistogram(track), FineHistogram(track)
        source.update(x, {})
        direct.update(np.maximum(x, 0), {})
        derived = source.relu()
        assert derived.exp > direct.exp
        assert np.array_equal(derived.counts, _coarsen(direct.counts, derived.exp - direct.exp))
        assert (derived.min, derived.max, derived.total) == (direct.min, direct.max, direct.total)
        if track:
            assert derived.abs_min == direct.abs_min == 0.0
    positive = FineHistogram(True)
    positive.update(np.abs(x) + 1, {})
    assert positive.relu().abs_min == positive.abs_min and np.array_equal(positive.relu().counts, positive.counts)
