"""User metrics and their gates (eval.metrics, eval.gates): computed for FP32 and INT8 on the tiny ONNX classifier
with npz data, keyed by the metric module's content, gated in compare, and bad input when they cannot run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from .conftest import after_ctime_tick, cache_entries, export_tiny_onnx, run_cli
from .test_bad_input import write_user_recipes

METRIC = """
import numpy as np


def mae(outputs, labels):
    logits = outputs["logits"]
    onehot = np.eye(logits.shape[1])[labels]
    return float(np.abs(logits - onehot).mean())
"""


@pytest.fixture
def work(tmp_path):
    """A tiny ONNX classifier, labelled npz data, a metric module and a recipe folder using them."""
    export_tiny_onnx(tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((40, 1, 28, 28)).astype(np.float32),
             y=rng.integers(0, 10, 40))
    (tmp_path / "mymetrics.py").write_text(METRIC)
    write_user_recipes(tmp_path, "eval_samples: 16\n",
                       "bench: {batch_sizes: [1], iterations: 3, warmup: 1, max_seconds: 0.2}\n"
                       "eval:\n  max_accuracy_drop: null\n"
                       "  metrics: {mae: {function: 'mymetrics:mae', higher_is_better: false}}\n")
    return tmp_path


def _build(work, cache, *overrides, run_dir="out", extra_env=None):
    return run_cli("build", "--config-dir", str(work / "recipes"), "--config-name", "mine",
                   f"hydra.run.dir={run_dir}", *overrides, cache=cache, cwd=work, extra_env=extra_env)


def _ran(report, prefix):
    return [s["name"] for s in report["steps"] if s["name"].startswith(prefix) and s["status"] == "ran"]


def _independent_mae(work, cache, report):
    """mae of each variant recomputed here from the evaluate steps' stored outputs and the split's labels."""
    from qcompile.cache import Cache

    c = Cache(cache)
    got = {}
    for variant in report["variants"]:
        step = next(s for s in report["steps"] if s["name"] == f"evaluate.{variant}")
        rec = c.lookup(step["key"], verify=False)
        data_step = next(s for s in report["steps"] if s["name"] == "data")
        data_rec = c.lookup(data_step["key"], verify=False)
        with np.load(c.blobs.path(rec.outputs["outputs"])) as out:
            logits = out["logits"].astype(np.float64)
        labels = _eval_labels(c, data_rec)
        got[variant] = float(np.abs(logits - np.eye(10)[labels]).mean())
    return got


def _eval_labels(c, data_rec):
    from qcompile.steps.arrays import load_samples

    name = next(n for n in data_rec.outputs if "eval" in n)
    _, labels = load_samples(c.blobs.path(data_rec.outputs[name]))
    return labels


def test_user_metric_values_gate_and_keys(work, cache_dir):
    proc = _build(work, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "out" / "report.json").read_text())
    want = _independent_mae(work, cache_dir, report)
    for variant in ("fp32", "int8"):
        assert report["metrics"][variant]["user"]["mae"] == pytest.approx(want[variant], rel=1e-9)
    # lower is better: the drop is how much the error rose
    assert report["user_metric_drop"]["int8"]["mae"] == pytest.approx(want["int8"] - want["fp32"], abs=1e-8)
    assert "mae" in (work / "out" / "report.md").read_text()

    # A gate that fails: exit 3, the message names the key, both values and the limit; nothing re-evaluated.
    proc = _build(work, cache_dir, "+eval.gates.mae.max_drop=-1", run_dir="gate")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "eval.gates.mae.max_drop=-1" in proc.stderr
    assert f"{want['int8']:.4f}" in proc.stderr and f"{want['fp32']:.4f}" in proc.stderr
    gated = json.loads((work / "gate" / "report.json").read_text())
    assert _ran(gated, "evaluate.") == [], "a gate threshold keys no evaluation"

    # Touching the metric module keeps the evaluations; editing it re-evaluates both variants.
    module = work / "mymetrics.py"
    after_ctime_tick(module, work)
    os.utime(module)
    proc = _build(work, cache_dir, run_dir="touched")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _ran(json.loads((work / "touched" / "report.json").read_text()), "evaluate.") == []
    after_ctime_tick(module, work)
    module.write_text(METRIC + "\n# edited\n")
    proc = _build(work, cache_dir, run_dir="edited")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(_ran(json.loads((work / "edited" / "report.json").read_text()), "evaluate.")) == \
        ["evaluate.fp32", "evaluate.int8"]


def _assert_bad_input(proc, cache, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr
    assert cache_entries(cache) == [], "a rejected build leaves nothing in the cache"


def test_gate_on_undefined_metric(work, cache_dir):
    proc = _build(work, cache_dir, "+eval.gates.f1.min=0.5")
    _assert_bad_input(proc, cache_dir, "eval.gates.f1")


@pytest.mark.parametrize("function, fragment", [("nomodule:mae", "does not import"),
                                                ("mymetrics:nothing", "defines no 'nothing'")])
def test_function_that_does_not_import(work, cache_dir, function, fragment):
    proc = _build(work, cache_dir, f"eval.metrics.mae.function={function}")
    _assert_bad_input(proc, cache_dir, "eval.metrics.mae.function", function, fragment)


@pytest.mark.parametrize("body, fragment", [
    ("def mae(outputs, labels):\n    return float('nan')\n", "not a finite number"),
    ("def mae(outputs, labels):\n    return 'high'\n", "not a number"),
    ("mae = 3\n", "no callable 'mae'"),
    ("def mae(outputs, labels):\n    return float(labels.sum())\n", "raised AttributeError"),
    ("raise ImportError('broken')\ndef mae(outputs, labels):\n    return 1.0\n", "does not import"),
])
def test_metric_that_fails_at_run_time(work, cache_dir, body, fragment):
    (work / "mymetrics.py").write_text(body)
    overrides = ["data.y_key=null"] if "labels.sum" in body else []
    proc = _build(work, cache_dir, *overrides)
    _assert_bad_input(proc, cache_dir, "metric 'mae'", "mymetrics:mae", fragment)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qcompile:")]
    assert len(errors) == 1, proc.stderr  # one line; the progress lines above it are the build's own
    # Bad input stores no failure record: the user's traceback is printed on request instead.
    assert not (cache_dir / "failures").exists()
    if "AttributeError" in fragment:
        traced = _build(work, cache_dir, *overrides, extra_env={"QCOMPILE_FULL_ERROR": "1"})
        assert traced.returncode == 2 and "mymetrics.py" in traced.stderr, traced.stderr[-2000:]


def test_sweep_table_and_pareto_by_a_user_metric(tmp_path):
    """A user metric is a sweep column; ``--metric`` makes it the quality axis, read its own way (lower is better
    for an error); asking for one no job measured is bad input."""
    from qcompile.report.sweep import collect_sweep, write_sweep_report

    from .test_sweep_report import make_job, make_report

    def report(p50: float, mae: float) -> dict:
        r = make_report(0.95, p50, 500_000)
        r["metrics"]["fp32"]["user"] = {"mae": 0.10}
        r["metrics"]["int8"]["user"] = {"mae": mae}
        r["user_metric_drop"] = {"int8": {"mae": round(mae - 0.10, 9)}}
        r["user_metric_higher_is_better"] = {"mae": False}
        return r

    # job 0: fast and accurate; job 1: slower and worse (dominated); job 2: slowest, the smallest error.
    for job, (p50, mae) in enumerate([(0.01, 0.11), (0.03, 0.12), (0.06, 0.105)]):
        make_job(tmp_path, job, [f"quant.x={job}"], report(p50, mae))
    rows = collect_sweep(tmp_path)
    assert [r["user_mae"] for r in rows] == [0.11, 0.12, 0.105]
    assert rows[0]["user_mae_fp32"] == 0.10 and rows[1]["user_mae_drop"] == pytest.approx(0.02)
    write_sweep_report(tmp_path, metric="mae")
    md = (tmp_path / "sweep.md").read_text()
    assert "mae of the variant (your metric, eval.metrics)" in md and "user_mae (quality)" in md
    with open(tmp_path / "sweep.csv") as f:
        import csv

        starred = [row["job"] for row in csv.DictReader(f) if row["pareto"] == "1"]
    assert starred == ["0", "2"], "lower error is better: job 1 is dominated by job 0"

    from qcompile.errors import BadInput

    with pytest.raises(BadInput, match="f1"):
        write_sweep_report(tmp_path, metric="f1")
