"""The sweep table, Pareto front and plot, from hand-made job folders (no model builds, no torch)."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from qcompile.report import sweep
from qcompile.report.pareto import pareto_front, short_labels
from qcompile.report.sweep import SweepReportCallback, collect_sweep, write_sweep_report

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_report(acc: float | None, p50: float, size: int, *, status: str = "ok", cosine: float = 0.9998,
                fp32_acc: float | None = 0.962, build_id: str = "721e5f0a054969dd", ci: float | None = 0.02,
                fp32_p50: float = 0.05) -> dict:
    """A report.json shaped like the real ones, from the few numbers a sweep table cares about.

    ``ci`` is the relative half-width of every p50's 95% CI (None: a report from before CIs were measured).
    """
    def one(p: float) -> dict:
        d = {"p50": p, "p90": p * 1.1, "p99": p * 1.4, "mean": p * 1.02}
        if ci is not None:
            d.update(p50_ci=[round(p * (1 - ci), 6), round(p * (1 + ci), 6)], runs=200, ci_reached=ci <= 0.05)
        return d

    def lat(p: float) -> dict:
        return {"1": one(p), "8": one(p * 4)}

    def verdict(p: float) -> str | None:
        if ci is None:
            return None
        return "faster" if p * (1 + ci) < fp32_p50 * (1 - ci) else "slower" if p * (1 - ci) > fp32_p50 * (1 + ci) \
            else "no measurable difference"

    return {
        "report_version": 2, "build_id": build_id, "recipe": "demo", "status": status,
        "steps": [{"name": "export", "kind": "export.onnx", "key": "83fa", "status": "cached", "seconds": 0.01},
                  {"name": "quantize", "kind": "quantize.ort_static", "key": "349d", "status": "ran", "seconds": 0.2},
                  {"name": "evaluate.int8", "kind": "evaluate.ort", "key": "81e4", "status": "ran", "seconds": 0.1}],
        "reference": "fp32", "variants": ["fp32", "int8"],
        "schemes": {"fp32": {"kind": "fp32"}, "int8": {"kind": "static", "format": "qdq", "per_channel": True}},
        "metrics": {"fp32": {"size_bytes": 1_700_000, "accuracy": fp32_acc, "latency_ms": lat(fp32_p50)},
                    "int8": {"size_bytes": size, "accuracy": acc, "latency_ms": lat(p50)}},
        "accuracy_drop": {"int8": None if acc is None else round(fp32_acc - acc, 6)},
        "fidelity": {"int8": {"top1_agreement": 0.99, "cosine_mean": cosine, "cosine_min": 0.99, "max_abs_diff": 2.1}},
        "speedup_p50": {"int8": {"1": round(fp32_p50 / p50, 3)}},
        "speedup_verdict": {"int8": {"1": verdict(p50)}},
        "gates": [{"step": "compare.int8", "message": "accuracy drop too large"}] if status == "gate_failed" else [],
        "notes": [], "artifacts": [],
    }


def make_job(sweep_dir: Path, job: int, overrides: list[str], report: dict | None = None,
             failure: tuple[int, str] | None = None) -> Path:
    d = sweep_dir / str(job)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if report is not None:
        (d / "report.json").write_text(json.dumps(report, indent=2))
    if failure is not None:
        code, msg = failure
        (d / "failure.json").write_text(json.dumps({"exit_code": code, "error": msg, "overrides": overrides}))
    return d


def ov(method: str, per_channel: bool) -> list[str]:
    return [f"quant.calibration.method={method}", f"quant.per_channel={str(per_channel).lower()}"]


@pytest.fixture
def labelled_sweep(tmp_path) -> Path:
    """Hand-checked: front = {0, 1, 3}. 2 and 4 are dominated, 3 ties 0, 5 is fastest but gate-failed.

    Every p50 has a +-2% CI (make_report), and the front holds with latency judged beyond that noise: 1's CI at
    batch 1 ([0.0245, 0.0255] ms) lies wholly below 0's and 3's ([0.0294, 0.0306]), so its lower accuracy is
    bought with a real speed-up; 4's CI is 1's (a tie in latency) at lower accuracy; 2 ([0.0343, 0.0357]) is
    less accurate and measurably slower than 0. The table stars at the largest batch, 8, where every p50 is four
    times batch 1's with the same relative CI: the same front.
    """
    d = tmp_path / "sweep"
    make_job(d, 0, ov("minmax", True), make_report(0.960, 0.030, 450_000))
    make_job(d, 1, ov("minmax", False), make_report(0.955, 0.025, 440_000))
    make_job(d, 2, ov("entropy", True), make_report(0.950, 0.035, 460_000))       # worse and slower than 0
    make_job(d, 3, ov("entropy", False), make_report(0.960, 0.030, 450_000))      # identical to 0: a tie
    make_job(d, 4, ov("percentile", True), make_report(0.950, 0.025, 430_000))    # as fast as 1, less accurate
    make_job(d, 5, ov("percentile", False), make_report(0.900, 0.010, 420_000, status="gate_failed"),
             failure=(3, "quantized accuracy 0.9000 is 6.20 points below FP32\nsecond line"))
    make_job(d, 10, ["quant.calibration.method=bogus", "quant.per_channel=true"],
             failure=(2, "quant.calibration.method: unknown method 'bogus'"))
    make_job(d, 11, ov("minmax", True))                                           # never finished
    # Things at the sweep root that are not jobs.
    (d / "multirun.yaml").write_text("hydra: {}\n")
    (d / ".hydra").mkdir()
    (d / "notes").mkdir()
    return d


def table_rows(md: str) -> list[dict[str, str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split(" | ")))) for ln in lines[2:]]


def test_collect_sweep_rows_and_statuses(labelled_sweep):
    rows = collect_sweep(labelled_sweep)
    assert [r["job"] for r in rows] == [0, 1, 2, 3, 4, 5, 10, 11]  # numeric order, not "10" < "2"
    assert [r["status"] for r in rows] == ["ok"] * 5 + ["gate_failed", "failed", "missing"]
    r0 = rows[0]
    assert r0["overrides"] == "quant.calibration.method=minmax quant.per_channel=true"
    assert r0["accuracy"] == 0.960 and r0["accuracy_fp32"] == 0.962 and r0["accuracy_drop"] == pytest.approx(0.002)
    assert r0["p50_ms_bs1"] == 0.030 and r0["p50_ms_bs8"] == 0.120 and r0["size_bytes"] == 450_000
    assert (r0["p50_ci_lo_ms_bs1"], r0["p50_ci_hi_ms_bs1"]) == (0.0294, 0.0306)
    # Each job's reference (FP32) measurement, for the plot's reference marker.
    assert (r0["ref_p50_ms_bs1"], r0["ref_p50_ci_lo_ms_bs1"], r0["ref_p50_ci_hi_ms_bs1"]) == (0.05, 0.049, 0.051)
    assert r0["cosine_mean"] == 0.9998 and r0["top1_agreement"] == 0.99 and r0["build_id"] == "721e5f0a054969dd"
    assert r0["steps_ran"] == "quantize evaluate.int8" and r0["error"] == "" and r0["exit_code"] is None
    assert r0["variant"] == "int8"
    assert rows[5]["error"] == "quantized accuracy 0.9000 is 6.20 points below FP32" and rows[5]["exit_code"] == 3
    failed = rows[6]
    assert failed["error"].startswith("quant.calibration.method: unknown") and failed["exit_code"] == 2
    assert failed["accuracy"] is None and failed["p50_ms_bs1"] is None and failed["build_id"] is None
    assert failed["p50_ci_lo_ms_bs1"] is None and failed["ref_p50_ms_bs1"] is None
    assert all(list(r) == list(rows[0]) for r in rows)  # same columns everywhere


def test_overrides_fall_back_to_failure_json(tmp_path):
    d = make_job(tmp_path, 0, ["a=1"], failure=(1, "boom"))
    (d / ".hydra" / "overrides.yaml").unlink()
    assert collect_sweep(tmp_path)[0]["overrides"] == "a=1"


def test_pareto_front_hand_checked():
    rows = [{"q": 0.96, "l": 0.030}, {"q": 0.955, "l": 0.025}, {"q": 0.95, "l": 0.035},
            {"q": 0.96, "l": 0.030}, {"q": 0.95, "l": 0.025}, {"q": None, "l": 0.001}, {"q": 0.99},
            {"q": 0.94, "l": 0.020}]
    # 2 is dominated by 0; 4 by 1 (equal latency, lower quality); 3 ties 0; rows without both values never count.
    assert pareto_front(rows, "q", "l") == {0, 1, 3, 7}
    assert pareto_front([], "q", "l") == set()
    assert pareto_front([{"q": 1, "l": 1}], "q", "l") == {0}


def test_short_labels_keep_only_differing_overrides():
    rows = [{"job": 0, "overrides": "quant.per_channel=true model=resnet18"},
            {"job": 1, "overrides": "quant.per_channel=false model=resnet18"}]
    assert short_labels(rows) == ["#0 per_channel=true", "#1 per_channel=false"]


def test_write_sweep_report(labelled_sweep):
    paths = write_sweep_report(labelled_sweep)
    assert set(paths) == {"md", "csv", "png"} and all(p.parent == labelled_sweep for p in paths.values())
    assert not list(labelled_sweep.glob(".*.tmp"))  # temp files were renamed into place

    md = paths["md"].read_text()
    assert "8 variants: 5 ok, 1 gate failed, 1 failed, 1 missing" in md
    assert "accuracy (quality)" in md
    table = table_rows(md)
    assert [t["job"] for t in table] == ["0", "1", "2", "3", "4", "5", "10", "11"]
    assert {t["job"] for t in table if t["pareto"] == "★"} == {"0", "1", "3"}
    assert sum(ln.count("★") for ln in md.splitlines() if ln.startswith("|")) == 3
    for r in collect_sweep(labelled_sweep):
        assert r["overrides"] in md
    assert table[0]["accuracy (quality)"] == "96.00%" and table[0]["size_bytes"] == "439.5 KiB"
    # One "[lo, hi]" column per CI in the markdown; the CSV below keeps the bounds as two numeric columns.
    assert table[0]["p50_ci_ms_bs1"] == "[0.0294, 0.0306]" and table[0]["ref_p50_ci_ms_bs8"] == "[0.196, 0.204]"
    assert table[6]["p50_ci_ms_bs1"] == "–"  # the failed job has no measurement
    assert "unknown method 'bogus'" in md and "second line" not in md

    with paths["csv"].open(newline="") as f:
        parsed = list(csv.DictReader(f))
    rows = collect_sweep(labelled_sweep)
    assert len(parsed) == len(rows)
    for got, want in zip(parsed, rows):
        assert got["pareto"] == ("1" if want["job"] in (0, 1, 3) else "0")
        for k, v in want.items():
            if v is None:
                assert got[k] == "", k
            elif isinstance(v, float):
                assert float(got[k]) == v, k
            else:
                assert got[k] == str(v), k

    png = paths["png"].read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 20_000
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 500


def test_synthetic_data_uses_cosine(tmp_path):
    d = tmp_path / "sweep"
    make_job(d, 0, ["quant.per_channel=true"], make_report(None, 0.030, 450_000, cosine=0.9990, fp32_acc=None))
    make_job(d, 1, ["quant.per_channel=false"], make_report(None, 0.020, 440_000, cosine=0.9950, fp32_acc=None))
    make_job(d, 2, ["quant.per_channel=maybe"], make_report(None, 0.040, 440_000, cosine=0.9900, fp32_acc=None))
    paths = write_sweep_report(d)
    md = paths["md"].read_text()
    assert "cosine_mean (quality)" in md and "no labels" in md
    table = table_rows(md)
    assert [t["pareto"] for t in table] == ["★", "★", ""]  # by cosine; job 2 is worse and slower than 0
    assert "accuracy" not in table[0], "a column no job has a value in is left out"
    with paths["csv"].open(newline="") as f:
        assert [r["accuracy"] for r in csv.DictReader(f)] == ["", "", ""]
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC


def test_without_matplotlib_tables_are_still_written(labelled_sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    paths = write_sweep_report(labelled_sweep)
    assert set(paths) == {"md", "csv"} and paths["md"].is_file() and paths["csv"].is_file()
    assert not (labelled_sweep / "pareto.png").exists()
    err = capsys.readouterr().err
    assert "skipped pareto.png" in err and len(err.strip().splitlines()) == 1


def test_callback_writes_report_and_exit_code(labelled_sweep, capsys):
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(labelled_sweep)}}})
    SweepReportCallback().on_multirun_end(config=cfg, config_name="demo")
    assert sweep.sweep_exit_code(labelled_sweep) == 3  # worst of: gate failed (3), bad input (2), never finished (1)
    assert (labelled_sweep / "sweep.md").is_file() and (labelled_sweep / "pareto.png").is_file()
    err = capsys.readouterr().err
    assert "8 variants" in err and "★" in err and "gate_failed" in err


def test_callback_exit_code_zero_when_all_built(tmp_path):
    make_job(tmp_path, 0, ["a=1"], make_report(0.95, 0.03, 1000))
    SweepReportCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert sweep.sweep_exit_code(tmp_path) == 0


HYDRA_APP = '''
import json, sys
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from qcompile.errors import GateFailed
from qcompile.report import sweep
sys.path.insert(0, {tests!r})
from test_sweep_report import make_report

@hydra.main(config_path=".", config_name="app", version_base="1.3")
def task(cfg):
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    if cfg.acc < 0:
        sweep.record_failure(out, GateFailed("too inaccurate"), list(hc.overrides.task))
        return
    (out / "report.json").write_text(json.dumps(make_report(cfg.acc, cfg.lat, 1000)))

task()
print("EXIT", sweep.sweep_exit_code(next(Path("sweeps").iterdir())))
'''

HYDRA_CONFIG = '''
acc: 0.9
lat: 0.03
hydra:
  sweep:
    dir: sweeps/s-${now:%H%M%S-%f}
    subdir: ${hydra:job.num}
  callbacks:
    sweep_report:
      _target_: qcompile.report.sweep.SweepReportCallback
'''


def test_callback_in_a_real_hydra_multirun(tmp_path):
    (tmp_path / "app.py").write_text(HYDRA_APP.format(tests=str(REPO / "tests")))
    (tmp_path / "app.yaml").write_text(HYDRA_CONFIG)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "app.py", "-m", "acc=0.9,0.95,-1", "lat=0.03"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "EXIT 3"
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()  # the callback found the same (timestamped) folder
    rows = collect_sweep(sweep_dir)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert rows[2]["overrides"] == "acc=-1 lat=0.03"
    assert {"sweep.md", "sweep.csv", "pareto.png"} <= {f.name for f in sweep_dir.iterdir()}
    assert [t["pareto"] for t in table_rows((sweep_dir / "sweep.md").read_text())] == ["", "★", ""]
