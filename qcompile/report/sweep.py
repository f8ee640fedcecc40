"""Sweep results: per-job failure records, the sweep table (sweep.md, sweep.csv), the Pareto plot and the
Hydra callback that writes them when a multirun ends.

Hydra puts each job in ``SWEEP_DIR/<job.num>/``; a job leaves ``report.json`` when it built, ``failure.json``
when it did not, and both when a quality gate rejected it.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback

from ..errors import BadInput, QcompileError
from .pareto import (
    LAT_PREFIX,
    USER_PREFIX,
    candidate_front,
    choose_axes,
    ci_keys,
    panel_keys,
    point_label,
    point_order,
    quality_label,
    ref_key,
    short_labels,
)

Row = dict[str, Any]
_LAT_PREFIX = LAT_PREFIX
_TEXT_COLUMNS = ("overrides", "status", "build_id", "variant", "steps_ran", "pareto")


def record_failure(out_dir: Path, error: QcompileError, overrides: list[str]) -> None:
    """Leave ``failure.json`` in a multirun job's folder so the sweep table can list the failed variant."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "failure.json").write_text(json.dumps(
        {"exit_code": error.exit_code, "error": str(error), "overrides": overrides}, indent=2) + "\n")


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _job_row(job_dir: Path) -> tuple[Row, dict[str, Any], dict[str, Any]]:
    import yaml

    report = _read_json(job_dir / "report.json")
    failure = _read_json(job_dir / "failure.json")
    overrides = None
    for where in ("overrides.yaml", ".hydra/overrides.yaml"):  # qcompile's record, else Hydra's
        try:
            overrides = yaml.safe_load((job_dir / where).read_text())
            break
        except (OSError, yaml.YAMLError):
            continue
    if not isinstance(overrides, list):
        overrides = (failure or {}).get("overrides") or []
    if report is not None:
        status = "gate_failed" if report.get("status") == "gate_failed" else "ok"
    elif failure is not None:
        status = "failed"
    elif (job_dir / "report.json").exists():
        status, failure = "failed", {"exit_code": 1, "error": "report.json is unreadable"}
    else:
        status = "missing"
    error = (failure or {}).get("error") or ""
    if not error and status == "gate_failed":
        error = ((report.get("gates") or [{}])[0] or {}).get("message") or ""
    exit_code = (failure or {}).get("exit_code")
    if exit_code is None and status != "ok":
        # No failure.json: a gate-failed report still means exit 3; a job that left nothing crashed (a bug).
        exit_code = 3 if status == "gate_failed" else 1
    ref, variant = _variants(report)
    measured = _get(report, "metrics", variant) or {}
    row: Row = {
        "job": int(job_dir.name),
        "overrides": " ".join(str(o) for o in overrides),
        "status": status,
        "build_id": _get(report, "build_id"),
        "variant": variant,
        "accuracy": measured.get("accuracy"),
        "accuracy_fp32": _get(report, "metrics", ref, "accuracy"),
        "accuracy_drop": _get(report, "accuracy_drop", variant),
        "top1_agreement": _get(report, "fidelity", variant, "top1_agreement"),
        "cosine_mean": _get(report, "fidelity", variant, "cosine_mean"),
        "spearman": measured.get("spearman"),
        "spearman_fp32": _get(report, "metrics", ref, "spearman"),
        "size_bytes": measured.get("size_bytes"),
        "exit_code": exit_code,
        "error": (str(error).strip().splitlines() or [""])[0][:200],
        "steps_ran": " ".join(s.get("name", "?") for s in (_get(report, "steps") or []) if s.get("status") == "ran"),
    }
    latency: dict[str, dict[str, Any]] = {}
    for name, prefix in ((variant, ""), (ref, "ref_")):
        for bs, lat in (_get(report, "metrics", name, "latency_ms") or {}).items():
            ci = _get(lat, "p50_ci") or [None, None]
            latency.setdefault(str(bs), {}).update({f"{prefix}p50": _get(lat, "p50"), f"{prefix}lo": ci[0],
                                                     f"{prefix}hi": ci[1]})
    _keep_pair(latency, _get(report, "speedup_p50", variant) or {}, _get(report, "speedup_ci", variant) or {})
    # The user's own metrics (eval.metrics): the variant's value, FP32's, the drop and which way is better.
    user: dict[str, Any] = {}
    for name, value in sorted((measured.get("user") or {}).items()):
        key = USER_PREFIX + name
        user.update({key: value, f"{key}_fp32": _get(report, "metrics", ref, "user", name),
                     f"{key}_drop": _get(report, "user_metric_drop", variant, name),
                     f"{key}_higher_is_better": _get(report, "user_metric_higher_is_better", name)})
    return row, latency, user


def _keep_pair(latency: dict[str, dict[str, Any]], speedups: dict[str, float], cis: dict[str, list[float]]) -> None:
    """Keep the variant's paired speed-up and its interval beside its latency, per point (``_place_by_pair``
    places it once every job is read)."""
    for bs, lat in latency.items():
        s, ci = speedups.get(bs), cis.get(bs)
        if s and ci and ci[0] > 0 and ci[1] > 0:
            lat.update(speedup=s, speedup_lo=ci[0], speedup_hi=ci[1])


def _place_by_pair(parsed: list[tuple[Row, dict[str, Any], dict[str, Any]]], points: list[str]) -> None:
    """Place every variant timed as a pair at the sweep's FP32 p50 divided by its paired speed-up (interval
    likewise), keeping its own p50 timed alone as ``measured_p50``.

    The sweep's FP32 p50 is the median of the jobs' FP32 p50s: one measurement when the jobs share it (its key
    holds no quant option), several when they were re-timed (``--remeasure``, a swept bench option). On that one
    scale variants compare by ratios each timed beside FP32, not by p50s timed at different moments of a shared
    machine: the star no longer goes to whichever variant happened to be timed while the machine was quiet.
    """
    import statistics

    for bs in points:
        refs = [lat[bs]["ref_p50"] for _, lat, _ in parsed if lat.get(bs, {}).get("ref_p50")]
        if not refs:
            continue
        ref = statistics.median(refs)
        for _, lat, _ in parsed:
            got = lat.get(bs)
            if not got:
                continue
            got["measured_p50"] = got.get("p50")
            if got.get("speedup"):
                got.update(p50=round(ref / got["speedup"], 4), lo=round(ref / got["speedup_hi"], 4),
                           hi=round(ref / got["speedup_lo"], 4))


def _variants(report: dict | None) -> tuple[str, str | None]:
    """(reference, the variant a row shows: the last one a scheme made, else the reference)."""
    ref = _get(report, "reference") or "fp32"
    names = _get(report, "variants") or []
    return ref, next((n for n in reversed(names) if n != ref), names[0] if names else None)


def collect_sweep(sweep_dir: Path) -> list[Row]:
    """One row per job folder of a Hydra multirun, in job order.

    Every row has the same keys, so the rows can go straight into a table: per batch size seen in any job,
    ``p50_ms_bs<N>`` with its 95% CI bounds ``p50_ci_lo_ms_bs<N>`` / ``p50_ci_hi_ms_bs<N>``, then the same for
    the job's reference (FP32) prefixed ``ref_`` (None where a job has no figure, or its report no CI). A variant
    timed as a pair with FP32 sits at the sweep's FP32 p50 over its paired speed-up (``_place_by_pair``), its own
    p50 timed alone in ``measured_p50_ms_bs<N>``.
    ``status`` is ``ok``, ``gate_failed``, ``failed`` or ``missing`` (a folder with neither report.json nor
    failure.json: the job never finished).
    """
    sweep_dir = Path(sweep_dir)
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    parsed = [_job_row(p) for p in jobs]
    batch_sizes = sorted({bs for _, lat, _ in parsed for bs in lat}, key=point_order)
    _place_by_pair(parsed, batch_sizes)
    # Every row gets every user metric column any job has (None where a job did not define it).
    user_cols = list(dict.fromkeys(k for _, _, user in parsed for k in user))
    rows = []
    for row, lat, user in parsed:
        # Latency columns sit before the size, keeping the per-job measurements together.
        items = list(row.items())
        at = list(row).index("size_bytes")
        cols = []
        for ref in (False, True):
            for b in batch_sizes:
                p50_key = f"{_LAT_PREFIX}{b}"
                got = lat.get(b, {})
                for key, field in zip((p50_key, *ci_keys(p50_key)), ("p50", "lo", "hi")):
                    cols.append((ref_key(key), got.get(f"ref_{field}")) if ref else (key, got.get(field)))
                if not ref:
                    cols.append((f"measured_{p50_key}", got.get("measured_p50")))
        cols += [(k, user.get(k)) for k in user_cols]
        rows.append(dict(items[:at] + cols + items[at:]))
    return rows


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same folder, so a reader never sees half a report."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _md_cell(key: str, v: Any) -> str:
    if v is None or v == "":
        return "–"
    if key in ("accuracy", "accuracy_fp32", "top1_agreement"):
        return f"{v * 100:.2f}%"
    if key == "accuracy_drop":
        return f"{v * 100:.2f} pt"
    if key in ("spearman", "spearman_fp32"):
        return f"{v:.4f}"
    if key.startswith(USER_PREFIX) and isinstance(v, float):
        return f"{v:.6g}"
    if key == "cosine_mean":
        return f"{v:.5f}"
    if key == "size_bytes":
        return f"{v / 2**20:.1f} MiB" if v >= 2**20 else f"{v / 1024:.1f} KiB"
    if "_ms_bs" in key:  # a p50 or a CI bound, in ms
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _markdown(rows: list[Row], columns: list[str], quality_key: str, latency_key: str | None,
              sweep_dir: Path) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "gate_failed", "failed", "missing")}
    lines = [f"# qcompile sweep `{sweep_dir.name}`", "",
             f"{len(rows)} variants: "
             + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n or s == "ok") + ".", "",
             f"Quality axis: **{quality_label(quality_key)}**; latency axis: each row's variant's p50 at "
             f"{point_label(latency_key[len(_LAT_PREFIX):]) if latency_key else 'batch –'} "
             "(`qcompile report DIR --batch N` takes another measured batch), placed at the sweep's FP32 p50 "
             "(the median of the jobs') divided by the variant's speed-up timed as a pair with FP32, so "
             "variants compare by ratios each timed "
             "beside FP32 rather than by p50s timed at different moments (`measured_p50_ms_bs<N>`: the "
             "variant's own, timed alone). "
             "★ marks the Pareto-optimal variants "
             "(no other variant is at least as good in quality, not measurably slower, and either better in "
             "quality or measurably faster; latencies are compared by their 95% confidence intervals, so a "
             "difference inside the noise counts as none); gate-failed variants are not candidates. "
             "`ref_` columns are each job's reference (FP32).", ""]
    # A CI is one column here, "[lo, hi]" under p50_ci_ms_bs<N>; the CSV keeps its bounds apart for machines.
    # Columns no row has a value in (accuracy of an embedding model, correlation of a classifier) are left out.
    table_cols = [c for c in columns if c != "error" and "_ci_hi_" not in c and not c.endswith("_higher_is_better")
                  and (c in _TEXT_COLUMNS or c == "pareto" or any(r.get(c) not in (None, "") for r in rows))]
    headers = [f"{c} (quality)" if c == quality_key else c.replace("_ci_lo_", "_ci_") for c in table_cols]
    lines += ["| " + " | ".join(headers) + " |",
              "|" + "|".join("---" if c in _TEXT_COLUMNS else "---:" for c in table_cols) + "|"]

    def cell(r: Row, c: str) -> str:
        if c == "pareto":
            return "★" if r["pareto"] else ""
        if "_ci_lo_" in c:
            lo, hi = r.get(c), r.get(c.replace("_ci_lo_", "_ci_hi_"))
            return "–" if lo is None or hi is None else f"[{_md_cell(c, lo)}, {_md_cell(c, hi)}]"
        return _md_cell(c, r.get(c))

    for r in rows:
        cells = [cell(r, c) for c in table_cols]
        cells = [f"`{x}`" if c == "build_id" and x != "–" else x for c, x in zip(table_cols, cells)]
        lines.append("| " + " | ".join(cells) + " |")
    failures = [r for r in rows if r["status"] != "ok"]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines.append(f"- job {r['job']} ({r['status']}, exit {r['exit_code']}) `{r['overrides'] or '-'}`: "
                         f"{_md_cell('error', r['error'] or 'no report.json nor failure.json')}")
    return "\n".join(lines) + "\n"


def _build(sweep_dir: Path, metric: str | None = None, batch: str | int | None = None,
           option: str = "--batch") -> tuple[dict[str, Path], list[Row], str, str | None]:
    sweep_dir = Path(sweep_dir)
    rows = collect_sweep(sweep_dir)
    # Both before anything is written: a batch the sweep did not measure is bad input, and no table is half right.
    quality_key, latency_key = choose_axes(rows, metric, batch, option)
    panels = panel_keys(rows, batch, option)
    front = candidate_front(rows, quality_key, latency_key)
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    columns = ["job", "pareto"] + [k for k in (rows[0] if rows else {}) if k not in ("job", "pareto")]
    paths = {"md": sweep_dir / "sweep.md", "csv": sweep_dir / "sweep.csv"}

    def write_md(tmp: Path) -> None:
        tmp.write_text(_markdown(rows, columns, quality_key, latency_key, sweep_dir))

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for r in rows:
                w.writerow(["" if r.get(c) is None else int(r[c]) if isinstance(r[c], bool) else r[c]
                            for c in columns])

    _atomic_write(paths["md"], write_md)
    _atomic_write(paths["csv"], write_csv)
    try:
        from .pareto_plot import plot_pareto

        _atomic_write(sweep_dir / "pareto.png",
                      lambda tmp: plot_pareto(rows, quality_key, panels, tmp, star_key=latency_key))
        paths["png"] = sweep_dir / "pareto.png"
    except ImportError as e:
        print(f"qcompile: skipped pareto.png ({e.name or 'matplotlib'} is not installed; "
              "pip install 'qcompile[sweep]')", file=sys.stderr)
    return paths, rows, quality_key, latency_key


def write_sweep_report(sweep_dir: Path, metric: str | None = None, batch: str | int | None = None,
                       option: str = "--batch") -> dict[str, Path]:
    """Write ``sweep.md``, ``sweep.csv`` and ``pareto.png`` into ``sweep_dir``; return {"md", "csv", "png"} paths.

    ``metric``: a user metric (``eval.metrics.<name>``) as the quality axis instead of the built-in choice.
    ``batch``: the latency point (``8``, ``8x128``) the Pareto front and the plot use; by default the front is
    taken at the largest batch measured and the plot has a panel for the smallest and one for the largest. A
    batch the sweep did not measure is bad input naming ``option``, before anything is written.
    The PNG needs matplotlib; without it the tables are still written and "png" is absent from the result.
    """
    return _build(sweep_dir, metric, batch, option)[0]


def _print_summary(rows: list[Row], paths: dict[str, Path], quality_key: str, latency_key: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    colors = {"ok": "green", "gate_failed": "yellow", "failed": "red", "missing": "dim"}
    table = Table(title=f"sweep: {len(rows)} variants", title_justify="left")
    for col in ("job", "variant", "status", quality_key, latency_key or "p50 ms", "size", "★"):
        table.add_column(col, overflow="fold")
    for r, label in zip(rows, short_labels(rows)):
        table.add_row(str(r["job"]), label.partition(" ")[2] or r["overrides"] or "-",
                      f"[{colors[r['status']]}]{r['status']}[/]", _md_cell(quality_key, r.get(quality_key)),
                      _md_cell(latency_key or "", r.get(latency_key)) if latency_key else "–",
                      _md_cell("size_bytes", r.get("size_bytes")), "★" if r["pareto"] else "")
    console = Console(stderr=True, highlight=False)
    console.print(table)
    console.print("sweep report: " + ", ".join(str(p) for p in paths.values()), soft_wrap=True)


def sweep_exit_code(sweep_dir: Path) -> int:
    """The worst exit code among a sweep's jobs (0 when every job built and passed its gates)."""
    rows = collect_sweep(Path(sweep_dir))
    return max((r["exit_code"] or 0 for r in rows if r["status"] != "ok"), default=0)


class SweepReportCallback(Callback):
    """Hydra callback: when a multirun ends, write the sweep report and print its summary.

    Enable with ``hydra.callbacks.sweep_report._target_=qcompile.report.sweep.SweepReportCallback``;
    ``+hydra.callbacks.sweep_report.metric=NAME`` plots the user metric ``eval.metrics.NAME`` as the quality axis,
    ``+hydra.callbacks.sweep_report.batch=8`` takes the front and the plot at batch 8.
    """

    OPTION = "hydra.callbacks.sweep_report.batch"

    def __init__(self, metric: str | None = None, batch: str | int | None = None) -> None:
        self.metric = metric
        self.batch = batch

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Write the report for ``config.hydra.sweep.dir`` and print a summary to stderr. A metric or batch the
        sweep did not measure is one line and exit 2 (Hydra would print a traceback of the exception)."""
        try:
            paths, rows, quality_key, latency_key = _build(Path(str(config.hydra.sweep.dir)), self.metric,
                                                           self.batch, self.OPTION)
        except BadInput as e:
            print(f"qcompile: bad input: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        _print_summary(rows, paths, quality_key, latency_key)
