"""Recovering a quantized model that fails its accuracy gate, measured side by side from one run:

1. the fallback search, bisection vs greedy, rows ranked by the sensitivity table or measured alone (trials, nodes
   kept in float, metric, wall time), each on a copy of the cache the plain build left (so the trials are the cost);
2. which ranking of the sensitivity table needs fewer nodes in float: local SQNR, cumulative SQNR, or the measured
   metric with each row alone in float (leave-one-out, one extra trial per row, as Intel Neural Compressor's basic
   strategy ranks), each followed greedily;
3. the fallback build run again (every trial a cache hit) as a ratio to a fully cached plain build of the same
   recipe, each in a fresh process as a user runs it (best of ``--rounds``).

    python benchmarks/recovery.py [--recipe digits_mobile_ptq] [--rounds 3] [override ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cli(args: list[str], cache: Path, cwd: Path) -> tuple[float, int, str]:
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qcompile", "build", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    return time.perf_counter() - t0, proc.returncode, proc.stderr


def _greedy(runner, order: list[dict], limit: int) -> tuple[int, float | None, int]:
    """Add rows of ``order`` one at a time until the gate passes: (nodes in float, metric, trials)."""
    trials = 0
    for k in range(1, len(order) + 1):
        nodes = sum(len(r["nodes"]) for r in order[:k])
        if nodes > limit:
            break
        t = runner.run(order[:k])
        trials += 1
        if t.passed:
            return nodes, t.value, trials
    return -1, None, trials


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="digits_mobile_ptq")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-float-nodes", type=int, default=16)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()

    import json
    import shutil

    from qcompile.builds.search import TrialRunner
    from qcompile.cache import Cache
    from qcompile.recipe.load import load_recipe
    from qcompile.run.progress import Reporter

    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        base = ["-cn", a.recipe, *a.overrides]
        fb = [*base, "quant.fallback.enabled=true", f"quant.fallback.max_float_nodes={a.max_float_nodes}",
              "quant.fallback.max_trials=60"]
        plain_s, rc, _ = _cli([*base, f"hydra.run.dir={home}/plain"], home / "cache-warm", home)
        assert rc in (0, 3), f"the plain build failed ({rc})"
        results = {}
        for rank in ("sensitivity", "measured"):
            for strategy in ("bisect", "greedy"):
                label = f"{rank}/{strategy}"
                cache = home / f"cache-{rank}-{strategy}"
                shutil.copytree(home / "cache-warm", cache)  # each search starts from the plain build's cache
                seconds, rc, err = _cli([*fb, f"quant.fallback.strategy={strategy}", f"quant.fallback.rank={rank}",
                                         f"hydra.run.dir={home}/{rank}-{strategy}"], cache, home)
                report = json.loads((home / f"{rank}-{strategy}" / "report.json").read_text())
                search = report["search"]
                chosen = search["trials"][search["chosen"]]
                results[label] = {"rc": rc, "seconds": seconds, "trials": len(search["trials"]),
                                  "float": len(chosen["float_nodes"]), "value": chosen["value"],
                                  "passed": search["passed"], "nodes": chosen["float_nodes"]}
        print(f"{a.recipe} {' '.join(a.overrides)}; {platform.processor() or platform.machine()}, {os.cpu_count()} "
              f"CPUs, Python {platform.python_version()}")
        print(f"\n1. fallback search, each from a copy of the cache the plain build ({plain_s:.1f} s, cold) left: "
              "the trials are the cost (wall time of the whole build, in a fresh process)")
        print(f"{'rank/strategy':<22} {'trials':>6} {'float nodes':>11} {'metric':>9} {'passed':>6} {'build s':>8}  "
              "kept in float")
        for s, r in results.items():
            value = "-" if r["value"] is None else f"{r['value']:.4f}"
            print(f"{s:<22} {r['trials']:>6} {r['float']:>11} {value:>9} {str(r['passed']):>6} {r['seconds']:>8.1f}  "
                  f"{', '.join(r['nodes'][:4])}{' ...' if len(r['nodes']) > 4 else ''}")

        # 2. rankings, followed greedily on one cache (trials shared between rankings are cache hits).
        cache = Cache(home / "cache-measured-bisect")
        recipe = load_recipe(a.recipe, [*a.overrides, "quant.sensitivity.enabled=true"])
        rows = {}
        for rank in ("local", "cumulative"):
            r = load_recipe(a.recipe, [*a.overrides, "quant.sensitivity.enabled=true",
                                       f"quant.sensitivity.rank={rank}"])
            runner = TrialRunner(r, cache, Reporter(quiet=True))
            runner.run([])
            rows[rank] = runner.ranking
        runner = TrialRunner(recipe, cache, Reporter(quiet=True))
        base_trial = runner.run([])
        t0 = time.perf_counter()
        alone = [(runner.run([row]).value or 0.0, row) for row in rows["local"]]
        loo_seconds = time.perf_counter() - t0
        rows["leave-one-out"] = [row for _, row in sorted(alone, key=lambda x: -x[0])]
        print(f"\n2. rankings followed greedily (the recipe as written: {base_trial.metric} {base_trial.value:.4f}; "
              f"leave-one-out cost {len(alone)} extra trials, {loo_seconds:.1f} s)")
        print(f"{'ranking':<14} {'float nodes':>11} {'metric':>9} {'trials':>6}  worst three rows")
        for rank, order in rows.items():
            nodes, value, trials = _greedy(runner, order, a.max_float_nodes)
            worst = ", ".join(r["name"] for r in order[:3])
            shown = "none pass" if nodes < 0 else f"{nodes:>11}"
            print(f"{rank:<14} {shown:>11} {value if value is None else round(value, 4)!s:>9} {trials:>6}  {worst}")

        # 3. the fallback build again, every trial cached, vs a fully cached plain build (fresh processes).
        again, plain = [], []
        for i in range(a.rounds):
            again.append(_cli([*fb, "quant.fallback.strategy=bisect", "quant.fallback.rank=measured",
                               f"hydra.run.dir={home}/again{i}"], home / "cache-measured-bisect", home)[0])
            plain.append(_cli([*base, f"hydra.run.dir={home}/plainagain{i}"], home / "cache-measured-bisect", home)[0])
        print(f"\n3. cached rerun, best of {a.rounds} (all runs in parentheses)")
        print(f"fallback build, every trial cached: {min(again):.2f} s ({', '.join(f'{x:.2f}' for x in again)})")
        print(f"plain build, fully cached:          {min(plain):.2f} s ({', '.join(f'{x:.2f}' for x in plain)})")
        print(f"ratio: {min(again) / min(plain):.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
