"""The packaged worked example that is not a classifier: an MLP regression on scikit-learn's real diabetes data
(qcompile/examples/diabetes.py: model factory, data factory, metrics), static INT8 gated on its own R^2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import cache_entries, run_cli

pytest.importorskip("sklearn")


def test_regression_is_judged_on_its_own_metric_and_gate(cache_dir, tmp_path):
    import onnxruntime as ort
    from sklearn.datasets import load_diabetes

    proc = run_cli("build", "--config-name", "diabetes_regression", "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "int8 r2 " in proc.stdout and "(fp32 " in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    fp32, int8 = report["metrics"]["fp32"]["user"], report["metrics"]["int8"]["user"]
    # R^2 recomputed here from the FP32 ONNX model on the 142 held-out patients.
    x, y = load_diabetes(return_X_y=True)
    y = (y - y[:300].mean()) / y[:300].std()
    sess = ort.InferenceSession(str(tmp_path / "out" / "artifacts" / "model.fp32.onnx"),
                                providers=["CPUExecutionProvider"])
    pred = sess.run(None, {"input": x[300:].astype(np.float32)})[0].reshape(-1)
    r2 = 1 - ((y[300:] - pred) ** 2).sum() / ((y[300:] - y[300:].mean()) ** 2).sum()
    assert fp32["r2"] == pytest.approx(r2, abs=1e-5)
    assert 0.3 < fp32["r2"] < 0.7, "a real fit of held-out patients, not a memorised one"
    assert abs(fp32["r2"] - int8["r2"]) < 0.01 and report["gates"] == []
    assert report["fidelity"]["int8"]["cosine_mean"] > 0.99, "one-value outputs: cosine over the whole column"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Your metrics" in md and "top-1" not in md

    stricter = run_cli("build", "--config-name", "diabetes_regression", "+eval.gates.r2.min=0.9",
                       "hydra.run.dir=strict", cache=cache_dir, cwd=tmp_path)
    assert stricter.returncode == 3 and "eval.gates.r2.min=0.9" in stricter.stderr, stricter.stderr[-2000:]
    steps = {s["name"]: s["status"] for s in json.loads((tmp_path / "strict" / "report.json").read_text())["steps"]}
    assert set(steps.values()) == {"cached"}, "a gate re-judges the stored results"


def test_a_gate_on_an_undefined_metric_is_refused(cache_dir, tmp_path):
    proc = run_cli("build", "--config-name", "diabetes_regression", "+eval.gates.f1.min=0.5",
                   cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "eval.gates.f1" in proc.stderr, proc.stderr[-2000:]
    assert cache_entries(cache_dir) == []


def test_the_fallback_search_targets_a_user_metric(cache_dir, tmp_path):
    """A clipping calibration (percentile 90) costs R^2 its gate; the search judges trials on eval.gates.r2 and
    keeps nodes in float until it passes."""
    proc = run_cli("build", "--config-name", "diabetes_regression", "quant.calibration.method=percentile",
                   "quant.calibration.percentile=90", "quant.fallback.enabled=true", "hydra.run.dir=fb",
                   cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    search = json.loads((tmp_path / "fb" / "report.json").read_text())["search"]
    first, chosen = search["trials"][0], search["trials"][search["chosen"]]
    assert first["metric"] == "r2 (gates.r2)" and not first["passed"]
    assert "eval.gates.r2.max_drop" in first["gate_error"]
    assert chosen["passed"] and chosen["float_nodes"] and chosen["value"] > first["value"]
