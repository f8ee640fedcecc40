"""Multirun sweeps through the shared cache: shared steps run once, failures are reported, not fatal."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from .conftest import run_cli


def _reports(sweep):
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/report.json"))]


def test_six_variant_parallel_sweep_shares_steps(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("build", "-m", "quant.calibration.method=minmax,entropy,percentile", "quant.per_channel=true,false",
                   "hydra/launcher=parallel", f"hydra.sweep.dir={sweep}", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = _reports(sweep)
    assert len(reports) == 6 and all(r["status"] == "ok" for r in reports)
    ran = Counter(s["name"] for r in reports for s in r["steps"] if s["status"] == "ran")
    # Two workers raced for every shared step; the per-key locks let each run exactly once.
    assert ran["data"] == ran["train"] == ran["export"] == ran["optimize"] == 1, ran
    assert ran["calibrate"] == 3, "once per method: per-channel does not change calibration"
    assert ran["quantize"] == 6
    assert ran["evaluate.fp32"] == ran["benchmark.fp32"] == 1, "FP32 is measured once for the whole sweep"
    assert ran["evaluate.int8"] == ran["benchmark.int8"] == ran["compare.int8"] == 6
    assert ran["speedup.int8"] == 6, "each variant's speed-up is timed beside FP32, as a pair"
    keys = {r["schemes"]["int8"]["method"]: s["key"] for r in reports for s in r["steps"] if s["name"] == "calibrate"}
    assert len(set(keys.values())) == 3

    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert (sweep / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (sweep / "sweep.md").read_text()
    assert md.count("★") >= 1 and all(r["build_id"] in md for r in reports)


@pytest.mark.parametrize("launcher", ["basic", "local_jobs"])
def test_failing_variants_do_not_stop_the_sweep(launcher, demo, shared_cache, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("build", "-m", "quant.calibration.method=minmax,bogus", "eval.max_accuracy_drop=0.01",
                   f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 2, "the worst failure's exit code: bad input"
    assert "Traceback" not in proc.stderr
    rows = {r["job"]: r for r in csv.DictReader((sweep / "sweep.csv").open())}
    assert rows["0"]["status"] == "ok" and rows["1"]["status"] == "failed"
    assert "quant.calibration.method" in rows["1"]["error"]
    assert "bogus" in (sweep / "sweep.md").read_text()


def test_report_verb_rebuilds_the_table(demo, shared_cache, tmp_path):
    sweep = tmp_path / "sweep"
    assert run_cli("build", "-m", "quant.per_channel=true,false", f"hydra.sweep.dir={sweep}",
                   cache=shared_cache, cwd=tmp_path).returncode == 0
    for name in ("sweep.md", "sweep.csv", "pareto.png"):
        (sweep / name).unlink()
    proc = run_cli("report", str(sweep), cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert all((sweep / n).is_file() for n in ("sweep.md", "sweep.csv", "pareto.png"))
    missing = run_cli("report", str(tmp_path / "nope"), cache=shared_cache, cwd=tmp_path)
    assert missing.returncode == 2


def test_sweep_across_targets_reuses_the_quantized_model(demo, shared_cache, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("build", "-m", "target=ort_cpu,ort_cpu_1thread", f"hydra.sweep.dir={sweep}",
                   cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = _reports(sweep)
    assert len(reports) == 2
    for rep in reports:
        status = {s["name"]: s["status"] for s in rep["steps"]}
        assert status["quantize"] == "cached", "the target's thread count does not change the model"
    assert reports[0]["build_id"] != reports[1]["build_id"]
