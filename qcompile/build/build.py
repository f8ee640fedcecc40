"""One build: plan, run with the cache, publish artifacts, write lockfile and reports."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import Cache
from ..errors import BadInput, GateFailed
from ..graph import Plan, StepOutcome
from ..plan import compile_plan
from ..recipe.schema import Recipe
from ..report.build_report import make_report, write_markdown
from ..run.progress import Reporter
from ..run.scheduler import execute
from .lockfile import LOCK_NAME, make_lock


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


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
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


def build(recipe: Recipe, out_dir: str | Path, cache: Cache | None = None,
          reporter: Reporter | None = None, check_gates: bool = True, plan: Plan | None = None) -> BuildResult:
    """Build ``recipe`` into ``out_dir``; raises ``GateFailed`` (after writing the report) when a gate fails.

    ``out_dir`` must not already hold a build: a finished build is never overwritten. ``plan`` replaces the
    recipe's compiled plan (``reproduce`` passes the one recorded in a lockfile).
    """
    out_dir = Path(out_dir)
    if (out_dir / "report.json").exists():
        raise BadInput(f"{out_dir} already holds a build; choose another output directory")
    cache = cache or Cache()
    reporter = reporter or Reporter()
    plan = plan or compile_plan(recipe)
    outcomes = execute(plan, cache, reporter)
    out_dir.mkdir(parents=True, exist_ok=True)
    arts = publish(plan, outcomes, cache, out_dir)
    lock = make_lock(recipe, plan, outcomes)
    report = make_report(lock, outcomes, arts)
    _write_json(out_dir / LOCK_NAME, lock)
    cache.register_build(lock["build_id"], out_dir / LOCK_NAME)
    write_markdown(report, out_dir / "report.md")
    _write_json(out_dir / "report.json", report)  # last: its presence marks a finished build
    reporter.summary(outcomes, title=f"build {lock['build_id']} → {out_dir}")
    result = BuildResult(out_dir, lock["build_id"], report, outcomes)
    if check_gates and result.gate_errors:
        raise GateFailed("; ".join(result.gate_errors))
    return result
