"""Accuracy-aware fallback: when the quantized variant fails its gate, find the fewest nodes to keep in float that
pass it, trying the rows of the sensitivity table (each alone first, with ``rank: measured``).

A loop above the scheduler: each trial is the recipe with more nodes in ``quant.exclude.names``, compiled into an
ordinary plan and executed up to the compare step, so every trial is cached like any build step. An interrupted
search loses only the trial that was running, and the same command replays the finished ones from the cache. Each
trial is appended to a ledger (JSON lines) the moment it is judged. The build that follows is a plain build of the
winning recipe: its lockfile records that plan, so ``reproduce`` replays it without searching.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cache import Cache
from ..graph import Node, Plan, StepOutcome
from ..plan import REFERENCE, compile_plan
from ..recipe.schema import Recipe
from ..run.progress import Reporter
from ..run.scheduler import execute
from ..steps.compare import GATES
from ..steps.search_plot import SearchPlotParams

LEDGER = "search.jsonl"


@dataclass
class Trial:
    """One judged plan: which sensitivity rows were kept in float, and what the gate said of it."""

    index: int
    float_nodes: list[str]  # the FP32 node names this trial added to quant.exclude.names (none: the recipe as written)
    metric: str
    value: float | None
    passed: bool
    gate_error: str | None
    size_bytes: int | None
    status: str  # ran: some step ran; cached: every step was a cache hit
    seconds: float
    phase: str = "cumulative"  # alone: one row alone in float (rank=measured); cumulative: the search proper
    higher_is_better: bool = True  # false for a user metric that is an error (eval.metrics.<name>)

    @property
    def merit(self) -> float:
        """The value as a ranking reads it, higher better (the lowest when unmeasured)."""
        if self.value is None:
            return float("-inf")
        return self.value if self.higher_is_better else -self.value


@dataclass
class SearchResult:
    """What the search found: the recipe to build, the trials in the order they ran, and the ranking used."""

    recipe: Recipe
    trials: list[Trial]
    chosen: int  # index of the trial whose recipe is built
    passed: bool
    ranking: list[dict[str, Any]] = field(default_factory=list)

    @property
    def strategy(self) -> str:
        """``quant.fallback.strategy``."""
        return self.recipe.quant.fallback.strategy

    @property
    def rank(self) -> str:
        """The order rows went to float (``quant.fallback.rank``)."""
        return self.recipe.quant.fallback.rank

    def failure(self) -> str:
        """Why the search found nothing, naming the best trial (for the failed gate's message)."""
        fallback, best = self.recipe.quant.fallback, self.trials[self.chosen]
        return (f"fallback search: no trial passed within quant.fallback.max_trials={fallback.max_trials} and "
                f"max_float_nodes={fallback.max_float_nodes} ({len(self.trials)} trials, {self.strategy}); the best, "
                f"trial {best.index} with {len(best.float_nodes)} node(s) in float, reached {best.metric} "
                f"{best.value if best.value is None else round(best.value, 4)}, and is what was built")

    def plot(self, cache: Cache, out: Path) -> bool:
        """Write the search's plot to ``out`` through the cached ``plot.search`` step; False without matplotlib
        (``qcompile[sweep]``), when the tables in report.md stand alone."""
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            return False
        plan = Plan()
        trials = self.trials
        params = SearchPlotParams(points=[(len(t.float_nodes), t.value, t.passed) for t in trials], chosen=self.chosen,
                                  metric=trials[0].metric, title=f"fallback search ({self.strategy}, rank "
                                                                 f"{self.rank}); numbers: trial order")
        plan.add(Node("plot", "plot.search", params))
        (outcome,) = execute(plan, cache)
        cache.blobs.copy_out(outcome.outputs["plot"], out)
        return True

    def summary(self) -> dict[str, Any]:
        """The report's ``search`` section."""
        return {"strategy": self.strategy, "rank": self.rank, "passed": self.passed, "chosen": self.chosen,
                "trials": [asdict(t) for t in self.trials],
                "ranking": [{k: r.get(k) for k in ("name", "nodes", "op_type", "local_sqnr_db", "cumulative_sqnr_db")}
                            for r in self.ranking]}


def wants_search(recipe: Recipe) -> bool:
    """Whether building ``recipe`` starts with a fallback search."""
    fallback = getattr(recipe.quant, "fallback", None)
    return bool(fallback is not None and fallback.enabled)


def primary_metric(gate: dict[str, Any]) -> tuple[str, str, str]:
    """(gate key, metric, how) of the first gate set: what a trial's value is; a user metric's gate
    (``eval.gates.<name>``) when no built-in gate is set."""
    for key, (metric, how) in GATES.items():
        if gate.get(key) is not None:
            return key, metric, how
    for name in sorted(gate.get("gates") or {}):
        return f"gates.{name}", name, "user"
    return "", "top1_agreement", "min"


class Ledger:
    """Trials as JSON lines, each written and synced as soon as it is judged."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, trial: Trial) -> None:
        """Add one trial to the ledger, durably."""
        with open(self.path, "a") as f:
            f.write(json.dumps(asdict(trial)) + "\n")
            f.flush()
            os.fsync(f.fileno())


def search(recipe: Recipe, cache: Cache, reporter: Reporter, ledger: Ledger) -> SearchResult:
    """Run the fallback search of ``recipe`` (``quant.fallback``) and return the recipe to build."""
    fb = recipe.quant.fallback
    runner = TrialRunner(recipe, cache, reporter, ledger)
    first = runner.run([])
    if first.passed:
        return SearchResult(recipe, runner.trials, 0, True)
    ranking = runner.ranking
    if fb.rank == "measured":
        alone = _measure_alone(runner, ranking, fb)
        if isinstance(alone, Trial):
            return SearchResult(runner.recipe_with(alone.float_nodes), runner.trials, alone.index, True, ranking)
        ranking = alone or ranking
    # The most rows whose nodes fit quant.fallback.max_float_nodes (a row is a Conv with its fused Relu, or one node).
    limit, nodes = 0, 0
    for row in ranking:
        nodes += len(row["nodes"])
        if nodes > fb.max_float_nodes:
            break
        limit += 1

    def trial(k: int) -> Trial:
        return runner.run(ranking[:k])

    passing: Trial | None = None
    if fb.strategy == "greedy":
        for k in range(1, limit + 1):
            if len(runner.trials) >= fb.max_trials:
                break
            if (t := trial(k)).passed:
                passing = t
                break
    elif limit and len(runner.trials) < fb.max_trials:
        # Bisection over how many of the worst rows stay in float: first the most the recipe allows (if that fails,
        # fewer would too, as far as the ranking is right), then halve the interval (lo fails, hi passes).
        top = trial(limit)
        if top.passed:
            passing, lo, hi = top, 0, limit
            while hi - lo > 1 and len(runner.trials) < fb.max_trials:
                mid = (lo + hi) // 2
                if (t := trial(mid)).passed:
                    passing, hi = t, mid
                else:
                    lo = mid
    if passing is not None:
        return SearchResult(runner.recipe_with(passing.float_nodes), runner.trials, passing.index, True, ranking)
    best = max(runner.trials, key=lambda t: (t.merit, -len(t.float_nodes)))
    return SearchResult(runner.recipe_with(best.float_nodes), runner.trials, best.index, False, ranking)


def _measure_alone(runner: TrialRunner, ranking: list[dict[str, Any]], fb) -> Trial | list[dict[str, Any]] | None:
    """Each row alone in float, in the table's order: the first trial that passes, else the rows reordered by the
    metric each reached (rows left unmeasured by the trial budget keep their order, after the measured ones)."""
    measured: list[tuple[float, dict[str, Any]]] = []
    for row in ranking:
        if len(runner.trials) >= fb.max_trials:
            break
        if len(row["nodes"]) > fb.max_float_nodes:
            continue
        t = runner.run([row], phase="alone")
        if t.passed:
            return t
        measured.append((t.merit, row))
    if not measured:
        return None
    order = [row for _, row in sorted(measured, key=lambda m: -m[0])]
    return order + [row for row in ranking if row not in order]


class TrialRunner:
    """Compiles, executes and judges trials; keeps the sensitivity ranking from the first one.

    ``run(rows)`` judges the recipe with those sensitivity rows in float (benchmarks/recovery.py also drives it with
    rows of its own, to compare rankings)."""

    def __init__(self, recipe: Recipe, cache: Cache, reporter: Reporter, ledger: Ledger | None = None):
        self.recipe, self.cache, self.reporter, self.ledger = recipe, cache, reporter, ledger
        self.trials: list[Trial] = []
        self.ranking: list[dict[str, Any]] = []

    def recipe_with(self, names: list[str]) -> Recipe:
        """The recipe with the FP32 nodes ``names`` kept in float too."""
        if not names:
            return self.recipe
        quant = self.recipe.quant
        return self.recipe.model_copy(update={"quant": quant.model_copy(update={"exclude": quant.exclude.plus(names)})})

    def run(self, rows: list[dict[str, Any]], phase: str = "cumulative") -> Trial:
        """Build the trial with ``rows`` in float up to its comparison, judge it and write it to the ledger."""
        t0 = time.perf_counter()
        recipe = self.recipe_with([n for r in rows for n in r["nodes"]])
        plan = compile_plan(recipe)
        variant = next(v for name, v in plan.variants.items() if name != REFERENCE)
        compare = variant["nodes"]["compare"]
        targets = [compare] + (["sensitivity"] if not self.trials and "sensitivity" in plan else [])
        outcomes = {o.name: o for o in execute(plan.restricted(targets), self.cache, self.reporter)}
        if not self.trials and "sensitivity" in outcomes:
            self.ranking = self._table(outcomes["sensitivity"])
        judged = outcomes[compare]
        key, metric, how = primary_metric(plan.node(compare).gate)
        value = _value(judged.result, metric, how, variant_name=judged.result.get("variant"))
        model = variant["nodes"]["model"].rsplit(".", 1)
        size = self._size(outcomes.get(model[0]), model[1])
        trial = Trial(index=len(self.trials), float_nodes=[n for r in rows for n in r["nodes"]],
                      metric=f"{metric} ({key})" if key else metric, value=value,
                      higher_is_better=how != "user" or (judged.result.get("higher_is_better") or {}).get(metric, True),
                      passed=judged.gate_error is None, gate_error=judged.gate_error, size_bytes=size,
                      status="ran" if any(o.status == "ran" for o in outcomes.values()) else "cached",
                      seconds=round(time.perf_counter() - t0, 3), phase=phase)
        self.trials.append(trial)
        if self.ledger is not None:
            self.ledger.append(trial)
        if not self.reporter.quiet:
            verdict = "[green]passes[/]" if trial.passed else "[red]fails[/]"
            shown = "—" if value is None else f"{value:.4f}"
            self.reporter.console.print(f"[bold]trial {trial.index}[/]{' (alone)' if phase == 'alone' else ''}: "
                                        f"{len(trial.float_nodes)} node(s) in float "
                                        f"-> {metric} {shown}, {verdict} ({trial.status})")
        return trial

    def _table(self, outcome: StepOutcome) -> list[dict[str, Any]]:
        return json.loads(self.cache.blobs.path(outcome.outputs["sensitivity"]).read_text())["nodes"]

    def _size(self, outcome: StepOutcome | None, output: str) -> int | None:
        if outcome is None or output not in outcome.outputs:
            return None
        return self.cache.blobs.path(outcome.outputs[output]).stat().st_size


def _value(result: dict[str, Any], metric: str, how: str, variant_name: str | None) -> float | None:
    """The trial's value of ``metric``: the variant's score for a drop gate, the fidelity for a minimum gate, its
    own value for a user metric."""
    if how == "user":
        return ((result.get("user") or {}).get(variant_name) or {}).get(metric)
    if how == "drop":
        scores = (result.get("scores") or {}).get(variant_name) or {}
        return scores.get(metric)
    return (result.get("fidelity") or {}).get(metric)
