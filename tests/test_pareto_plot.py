"""The Pareto plot and its latency axis: panels per batch, the front at the batch shown, --batch, bounded axes and
labels that do not overlap. Rows are hand-made dicts or job folders (no builds)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from qcompile.cli import main
from qcompile.errors import BadInput
from qcompile.report.pareto import candidate_front, choose_axes, ci_keys, panel_keys, ref_key, resolve_point
from qcompile.report.pareto_plot import plot_pareto
from qcompile.report.point_labels import PointLabel, overlap, place_labels
from qcompile.report.sweep import SweepReportCallback

from .conftest import run_cli
from .test_sweep_report import make_job, make_report, table_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(job: int, acc: float, p50: dict[str, float], status: str = "ok", fp32_acc: float = 0.962,
        fp32: dict[str, float] | None = None, ci: float = 0.02) -> dict:
    """A sweep row as ``collect_sweep`` makes it, from the variant's accuracy and p50 per latency point (each with a
    +-``ci`` CI), and the reference's."""
    fp32 = fp32 or {point: 2 * p for point, p in p50.items()}
    r = {"job": job, "overrides": f"quant.calibration.method=m{job}", "status": status, "accuracy": acc,
         "accuracy_fp32": fp32_acc, "size_bytes": 430_000}
    for point, p in p50.items():
        key = f"p50_ms_bs{point}"
        lo, hi = ci_keys(key)
        r.update({key: p, lo: p * (1 - ci), hi: p * (1 + ci)})
        f = fp32[point]
        r.update({ref_key(key): f, ref_key(lo): f * (1 - ci), ref_key(hi): f * (1 + ci)})
    return r


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


# Job 1 is less accurate than job 0 and no faster at batch 1, but twice as fast at batch 8.
FASTER_AT_8 = [row(0, 0.960, {"1": 0.030, "8": 0.120}), row(1, 0.955, {"1": 0.031, "8": 0.060})]


def test_front_follows_the_batch_shown(tmp_path):
    rows = [dict(r) for r in FASTER_AT_8]
    assert choose_axes(rows, batch=1) == ("accuracy", "p50_ms_bs1")
    assert candidate_front(rows, "accuracy", "p50_ms_bs1") == {0}
    assert candidate_front(rows, "accuracy", "p50_ms_bs8") == {0, 1}
    # By default the front (the table's star) is taken at the largest batch, and both ends are plotted.
    assert choose_axes(rows) == ("accuracy", "p50_ms_bs8")
    assert panel_keys(rows) == ["p50_ms_bs1", "p50_ms_bs8"]
    panels = plot_pareto(rows, "accuracy", panel_keys(rows), tmp_path / "p.png", star_key="p50_ms_bs8")
    assert [(p.latency_key, set(p.front)) for p in panels] == [("p50_ms_bs1", {0}), ("p50_ms_bs8", {0, 1})]


def test_plot_renders_one_and_several_batch_points(tmp_path):
    one = [row(j, 0.95 + j / 1000, {"1": 0.03 - j / 1000}) for j in range(4)]
    assert panel_keys(one) == ["p50_ms_bs1"]
    panels = plot_pareto(one, "accuracy", panel_keys(one), tmp_path / "one.png")
    assert len(panels) == 1 and panels[0].front == {3}  # the most accurate is also the fastest

    three = [row(j, 0.95 + j / 1000, {"1": 0.03, "8": 0.1 - j / 100, "32": 0.4}) for j in range(4)]
    assert panel_keys(three) == ["p50_ms_bs1", "p50_ms_bs32"]  # the smallest and the largest
    assert panel_keys(three, batch="8") == ["p50_ms_bs8"]
    two = plot_pareto(three, "accuracy", panel_keys(three), tmp_path / "two.png")
    assert [p.latency_key for p in two] == ["p50_ms_bs1", "p50_ms_bs32"]
    assert png_size(tmp_path / "two.png")[0] > png_size(tmp_path / "one.png")[0] * 1.5


def test_axes_bounded_by_the_data(tmp_path):
    fp32 = {"fp32_acc": 1.0, "fp32": {"1": 0.05}}
    rows = [row(0, 1.0, {"1": 0.020}, **fp32), row(1, 0.999, {"1": 0.025}, **fp32),
            row(2, 0.98, {"1": 0.010}, status="gate_failed", **fp32)]
    (panel,) = plot_pareto(rows, "accuracy", ["p50_ms_bs1"], tmp_path / "p.png")
    assert 98.0 > panel.ylim[0] > 97.0 and panel.ylim[1] == 100.0, "accuracy never runs past 100%"
    # Latency: from the fastest CI's lower end (0.0098 ms) to FP32's upper end (0.051), with a margin, no more.
    span = 0.051 - 0.0098
    assert 0.0098 - 0.1 * span < panel.xlim[0] < 0.0098 and 0.051 < panel.xlim[1] < 0.051 + 0.1 * span
    assert panel.front == {0}, "the gate-failed variant is faster, but not a candidate"
    cosine = [dict(r, cosine_mean=c, accuracy=None) for r, c in zip(rows, (0.9999, 0.9990, 0.97))]
    (panel,) = plot_pareto(cosine, "cosine_mean", ["p50_ms_bs1"], tmp_path / "c.png")
    assert panel.ylim[1] <= 1.0


def test_resolve_point():
    assert resolve_point(8, ["1", "8"]) == "8"
    assert resolve_point("8", ["1x128", "8x128"]) == "8x128"  # one sequence length: the batch names it
    assert resolve_point("8x32", ["8x32", "8x128"]) == "8x32"
    with pytest.raises(BadInput, match=r"^--batch: .*several sequence lengths \(8x32, 8x128\)"):
        resolve_point("8", ["8x32", "8x128"])
    with pytest.raises(BadInput, match=r"^--batch: batch 4 was not measured; the measured batches are: 1, 8$"):
        resolve_point("4", ["1", "8"])


@pytest.fixture
def sweep_faster_at_8(tmp_path) -> Path:
    d = tmp_path / "sweep"
    for job, (acc, lat1, lat8) in enumerate([(0.960, 0.030, 0.120), (0.955, 0.031, 0.060)]):
        rep = make_report(acc, lat1, 440_000)
        rep["metrics"]["int8"]["latency_ms"]["8"] = rep["metrics"]["int8"]["latency_ms"]["1"] | {
            "p50": lat8, "p50_ci": [lat8 * 0.98, lat8 * 1.02]}
        make_job(d, job, [f"quant.per_channel={job == 0}"], rep)
    return d


def test_report_batch_option(sweep_faster_at_8, capsys):
    d = sweep_faster_at_8

    def report(*args: str) -> int:
        with pytest.raises(SystemExit) as e:
            main(["report", str(d), *args])
        return e.value.code

    assert report("--batch", "4") == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "--batch" in err and "batch 4 was not measured" in err and "1, 8" in err
    assert not (d / "sweep.md").exists() and not (d / "pareto.png").exists(), "bad input writes nothing"
    assert report("--batch", "1") == 0
    assert [t["pareto"] for t in table_rows((d / "sweep.md").read_text())] == ["★", ""]
    assert report("--batch", "8") == 0
    assert [t["pareto"] for t in table_rows((d / "sweep.md").read_text())] == ["★", "★"]
    assert "p50 at batch 8" in (d / "sweep.md").read_text()


def test_callback_unmeasured_batch_is_one_line_and_exit_2(sweep_faster_at_8, capsys):
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_faster_at_8)}}})
    with pytest.raises(SystemExit) as e:
        SweepReportCallback(batch=32).on_multirun_end(config=cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("qcompile: bad input: hydra.callbacks.sweep_report.batch:")
    assert "1, 8" in err and not (sweep_faster_at_8 / "sweep.md").exists()


def test_sweep_refuses_an_unmeasured_batch_before_any_job(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("build", "-m", "quant.per_channel=true,false", "+hydra.callbacks.sweep_report.batch=4",
                   f"hydra.sweep.dir={sweep}", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hydra.callbacks.sweep_report.batch" in lines[0] and "[1, 8]" in lines[0]
    assert not sweep.exists() and not any(cache_dir.rglob("*.json")), "no job started, nothing cached"


def test_labels_of_a_dense_cluster_do_not_overlap(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Twelve points on two accuracy levels within 10% of each other in latency, as a quant-option sweep gives.
    pts = [(0.110 + 0.001 * (j % 6), 95.7 if j < 6 else 95.5) for j in range(12)]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.scatter(*zip(*pts))
    ax.set_xlim(0.08, 0.16)
    ax.set_ylim(95.4, 96.0)
    fig.canvas.draw()
    place_labels(ax, [PointLabel(p, f"#{j}") for j, p in enumerate(pts)])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 12
    frame = ax.get_window_extent(renderer)
    for n, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1, ax.texts[n]
        for b in boxes[n + 1:]:
            assert overlap((a.x0, a.y0, a.x1, a.y1), (b.x0, b.y0, b.x1, b.y1)) == 0
    plt.close(fig)
