"""One build: plan, run with the cache, publish artifacts, write lockfile and reports."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..cache import Cache
from ..errors import GateFailed
from ..graph import Plan, StepOutcome
from ..plan import compile_plan
from ..recipe.schema import Recipe
from ..report.build_report import make_report, write_gate_notice, write_markdown
from ..report.next_steps import next_steps
from ..report.search_report import read_sensitivity
from ..run.progress import Reporter
from ..run.scheduler import execute
from ..steps.compare import drop_interval_note
from .lockfile import LOCK_NAME, make_lock
from .portable import project_root
from .rundir import abandon, claim, new_build_dir
from .search import LEDGER, Ledger, search, wants_search


@dataclass
class BuildResult:
    """A finished build: where it is, its id, its report and its step outcomes."""

    out_dir: Path
    build_id: str
    report: dict[str, Any]
    outcomes: list[StepOutcome]

    @property
    def gate_errors(self) -> list[str]:
        """Messages of the quality gates this build failed (empty when it passed)."""
        return [g["message"] for g in self.report["gates"]]


def _write_json(path: Path, obj: Any, keep: Callable[[Path], None] | None = None) -> None:
    """Write ``obj`` atomically; ``keep`` sees the whole file before it takes its name."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    if keep is not None:
        keep(tmp)
    os.replace(tmp, path)


def publish(plan: Plan, outcomes: list[StepOutcome], cache: Cache, out_dir: Path) -> list[dict[str, Any]]:
    """Copy published outputs into ``out_dir/artifacts`` (each verified against its digest)."""
    arts = []
    by_name = {o.name: o for o in outcomes}
    for node in plan.order():
        for output, rel in node.publish.items():
            digest = by_name[node.name].outputs[output]
            dest = out_dir / "artifacts" / rel
            cache.blobs.copy_out(digest, dest)
            arts.append({"path": f"artifacts/{rel}", "sha256": digest, "size_bytes": dest.stat().st_size,
                         "step": node.name})
    return arts


def _gate_warnings(plan: Plan, outcomes: list[StepOutcome]) -> list[str]:
    """Say where the evaluation set is too small for the accuracy gate's verdict: its limit lies inside the drop's
    95% interval (``drop_interval_note``)."""
    notes = ((o.name, drop_interval_note(o.result, plan.node(o.name).gate.get("max_accuracy_drop"))) for o in outcomes)
    return [f"{name}: {note}" for name, note in notes if note]


def build(recipe: Recipe, out_dir: str | Path | None = None, cache: Cache | None = None,
          reporter: Reporter | None = None, check_gates: bool = True, plan: Plan | None = None,
          remeasure: bool = False, root: str | Path | None = None) -> BuildResult:
    """Build ``recipe`` into ``out_dir``; raises ``GateFailed`` (after writing the report) when a gate fails.

    ``remeasure`` (``qcompile build --remeasure``) re-runs the measurement steps (latency) even when cached;
    everything else is reused as usual.

    ``out_dir`` must not hold or be claimed by another build (see ``rundir``): a build is never overwritten, and
    one that fails before running removes only what it created; None picks a new folder under
    ``qcompile-out/<recipe name>/``, as ``qcompile build`` does. ``plan`` replaces the recipe's compiled plan
    (``reproduce`` passes the one recorded in a lockfile). ``root`` is the project's folder, which the lockfile's
    paths are written relative to (default: ``project_root()``, the working directory).
    """
    out_dir = Path(out_dir) if out_dir is not None else new_build_dir(recipe.name)
    root = Path(root).resolve() if root is not None else project_root()
    claim(out_dir)
    cache = cache or Cache()
    reporter = reporter or Reporter()
    found = None
    try:
        # One lease from the first lookup until the lockfile is registered: gc keeps what this build uses.
        with cache.lease():
            if plan is None and wants_search(recipe):
                found = search(recipe, cache, reporter, Ledger(out_dir / LEDGER))
                recipe = found.recipe
            plan = plan or compile_plan(recipe)
            outcomes = execute(plan, cache, reporter, remeasure=remeasure)
            cache.memo.flush()  # only now: a build rejected as bad input leaves no memo entry either
            arts = publish(plan, outcomes, cache, out_dir)
            plotted = found is not None and found.plot(cache, out_dir / "search.png")
            lock = make_lock(recipe, plan, outcomes, cache, out_dir, root)
            _write_json(out_dir / LOCK_NAME, lock)
            cache.register_build(lock["build_id"], out_dir / LOCK_NAME, root)
    except BaseException:
        abandon(out_dir)  # no report.json: removes what this build created, never a user's files
        raise
    report = make_report(lock, outcomes, arts)
    report["notes"] += _gate_warnings(plan, outcomes)
    sensitivity = read_sensitivity(out_dir, arts)
    if sensitivity is not None:
        report["sensitivity"] = sensitivity
    if found is not None:
        report["search"] = found.summary()
        if not found.passed:
            report["search"]["failure"] = found.failure()
        if plotted:
            report["search"]["plot"] = "search.png"
    report["next_steps"] = next_steps(lock["recipe"], report)  # empty when every gate passed
    write_markdown(report, out_dir / "report.md")
    write_gate_notice(report, out_dir / "artifacts")
    # report.json last: its presence marks a finished build. Both reports are kept with the build id for checkout.
    _write_json(out_dir / "report.json", report, keep=lambda tmp: cache.register_reports(
        lock["build_id"], {"report.md": out_dir / "report.md", "report.json": tmp}))
    reporter.summary(outcomes, title=f"build {lock['build_id']} → {out_dir}")
    result = BuildResult(out_dir, lock["build_id"], report, outcomes)
    if check_gates and result.gate_errors:
        why = [report["search"]["failure"]] if "failure" in report.get("search", {}) else []
        raise GateFailed("; ".join(result.gate_errors + why), out_dir, result.build_id, report, report["next_steps"])
    return result
