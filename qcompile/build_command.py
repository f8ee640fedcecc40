"""``qcompile build``: Hydra composes the recipe (or a composition memo stands in for it), then one build runs.

Exit codes: 0 built, 1 a bug, 2 bad input, 3 a quality gate failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from .errors import BadInput, QcompileError, as_bad_input

err = Console(stderr=True, highlight=False)
_bug_seen = False  # set when a build raised something other than a QcompileError
_memo = None  # compose_memo's Probe of the plain build Hydra runs, to record its composition
_warned = False  # whether composing showed a warning (a memo would not show it again)


def fail(e: QcompileError) -> int:
    """Print ``e`` as one line on stderr; return its exit code."""
    label = {2: "bad input", 3: "gate failed"}.get(e.exit_code, "error")
    from rich.markup import escape

    # escape: messages hold brackets ("pip install 'qcompile[ray]'", "std[0]") that rich would read as markup
    err.print(f"[bold red]qcompile: {label}:[/] {escape(str(e))}", soft_wrap=True)
    return e.exit_code


def user_os_error(e: OSError) -> BadInput:
    """The one-line bad input for an OS error the user's environment caused (full disk, read-only cache)."""
    from .cache import default_cache_dir

    return as_bad_input(e, default_cache_dir())  # type: ignore[return-value]


def cmd_build(argv: list[str]) -> int:
    """``qcompile build``: hand the arguments to Hydra; return the exit code.

    ``--remeasure`` (ours, not Hydra's) re-runs the measurement steps even when cached; the rest is Hydra's.
    A plain build whose composition is memoized and unchanged skips Hydra (see ``compose_memo``).
    """
    global _memo
    import os
    import time

    from .compose_memo import lookup, probe
    from .recipe.deletions import ENV, split_deletions

    started = time.time()
    remeasure = "--remeasure" in argv
    argv, deletions = split_deletions([a for a in argv if a != "--remeasure"])
    _memo = probe(argv, deletions, started)  # before Hydra reads anything: an edit racing it is a miss, not stale
    memo = lookup(_memo) if _memo else None
    # Through the environment rather than a global: sweep launchers run builds in other processes (joblib,
    # submitit, SLURM), which inherit the environment. build() reads QCOMPILE_REMEASURE.
    saved_env = os.environ.get("QCOMPILE_REMEASURE")
    if remeasure:
        os.environ["QCOMPILE_REMEASURE"] = "1"
    saved_deletions = os.environ.pop(ENV, None)
    if deletions:
        os.environ[ENV] = ",".join(deletions)  # applied by _run_task after composing (see recipe/deletions.py)
    saved = sys.argv
    sys.argv = ["qcompile", *argv]
    ran_hydra = False
    try:
        if memo is None or not _run_memo(memo):
            ran_hydra = True
            _run_hydra(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        # Hydra itself exits 1 on composition errors (unknown group option, bad override syntax): those are
        # bad input. Our task exits 1 only for a bug, and says so through _bug_seen.
        return 2 if code == 1 and not _bug_seen else code
    finally:
        _memo = None
        sys.argv = saved
        os.environ.pop(ENV, None)
        if saved_deletions is not None:
            os.environ[ENV] = saved_deletions
        if remeasure:
            if saved_env is None:
                os.environ.pop("QCOMPILE_REMEASURE", None)
            else:
                os.environ["QCOMPILE_REMEASURE"] = saved_env
    if not ran_hydra:
        return 0
    from .report import sweep

    return sweep.LAST_SWEEP_EXIT_CODE  # 0 after a single build or an all-green sweep


def _run_hydra(argv: list[str]) -> None:
    global _warned
    import warnings

    import hydra

    from .compose_once import compose_once
    from .recipe.load import DEFAULT_RECIPE, RECIPES_MODULE

    _check_user_recipes(argv)
    main = hydra.main(config_path=f"pkg://{RECIPES_MODULE}", config_name=DEFAULT_RECIPE, version_base="1.3")(_task)
    shown = warnings.showwarning

    def show(*args, **kwargs):
        global _warned
        _warned = True
        shown(*args, **kwargs)

    _warned, warnings.showwarning = False, show
    try:
        with compose_once(argv):
            main()
    finally:
        warnings.showwarning = shown


def _check_user_recipes(argv: list[str]) -> None:
    """Name a broken file in the user's recipe folder before Hydra parses it (its errors are tracebacks), and
    say which extra a launcher needs before Hydra fails to load it."""
    from .recipe.files import check_recipe_dir

    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            check_recipe_dir(argv[i + 1])
        elif arg.startswith("--config-dir="):
            check_recipe_dir(arg.split("=", 1)[1])
        elif arg.startswith("hydra/launcher="):
            _check_launcher(arg.split("=", 1)[1])


# Launcher recipe -> (plugin module it needs, extra that installs it).
LAUNCHERS = {"parallel": ("hydra_plugins.hydra_joblib_launcher", "sweep"),
             "local_jobs": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
             "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
             "ray_cluster": ("hydra_plugins.hydra_ray_launcher", "ray")}


def _check_launcher(name: str) -> None:
    import importlib.util

    need = LAUNCHERS.get(name)
    try:
        missing = need is not None and importlib.util.find_spec(need[0]) is None
    except ModuleNotFoundError:  # not even the hydra_plugins namespace
        missing = True
    if need and missing:
        raise BadInput(f"hydra/launcher={name} needs the {need[1]!r} extra: pip install 'qcompile[{need[1]}]'",
                       key="hydra/launcher")


def _task(cfg) -> None:
    """Hydra's task function: one build per (multi)run job, in Hydra's output directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .recipe.load import to_container

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    user_dir = next((s.path for s in hc.runtime.config_sources if s.provider == "command-line"), None)

    def remember(recipe: dict) -> None:
        if _memo is not None and not multirun and not _warned:
            from .compose_memo import record

            record(_memo, cfg, hc, out, recipe, user_dir)

    _run_task(lambda: to_container(cfg), user_dir, hc.job.config_name, dict(hc.runtime.choices),
              list(hc.overrides.task), out, multirun, remember)


def _run_task(composed, user_dir, config_name, choices, overrides, out: Path, multirun: bool, remember=None) -> None:
    """Validate the composed recipe and build it into ``out``; every failure becomes its exit code."""
    global _bug_seen
    import copy
    import os

    from .builds import build
    from .recipe.deletions import ENV, apply_deletions
    from .recipe.files import resolve_relative_paths
    from .recipe.load import validate

    try:
        recipe_data = composed()
        kept = copy.deepcopy(recipe_data)  # deletions and path fixes edit it in place; a memo keeps it as composed
        deletions = [k for k in os.environ.get(ENV, "").split(",") if k]
        data = resolve_relative_paths(apply_deletions(recipe_data, deletions), user_dir, config_name,
                                      choices, overrides)
        recipe = validate(data)
        if remember is not None:
            remember(kept)
        result = build(recipe, out)
        _print_outcome(result)
    except Exception as e:
        if isinstance(e, OSError) and as_bad_input(e) is not None:
            e = user_os_error(e)  # a full disk, a read-only cache: the user's to fix, no traceback
        if not isinstance(e, QcompileError):
            # A bug: show the traceback, and mark it so the exit code stays 1 (see cmd_build).
            import traceback

            traceback.print_exc()
            _bug_seen = True
            e = QcompileError(f"{type(e).__name__}: {e}")
        code = fail(e)
        if multirun:
            from .report.sweep import record_failure

            record_failure(out, e, overrides)
            return  # the other variants go on; the sweep's exit code is the worst job's
        if isinstance(e, BadInput):
            from .builds.rundir import abandon

            abandon(out)  # removes the folder only when this build created it
        raise SystemExit(code) from None


def _run_memo(memo) -> bool:
    """Build from a composition memo, as Hydra's run would (see compose_memo); False when Hydra must run."""
    import copy

    from .compose_memo import start_run

    try:
        out = start_run(memo)
    except ValueError:
        return False
    except BadInput as e:  # the run folder is taken: as RunDirClaim says it
        print(f"qcompile: bad input: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _run_task(lambda: copy.deepcopy(memo.recipe), memo.user_dir, memo.config_name, memo.choices,
              memo.task_overrides, out, False)
    return True


def _print_outcome(result) -> None:
    from .report.build_report import speed_text

    r = result.report
    m, ref = r["metrics"], r["reference"]
    parts = [f"built {r['recipe']} [bold]{r['build_id']}[/] in {result.out_dir}"]
    for name in r["variants"]:
        if name == ref:
            continue
        acc = m[name]["accuracy"]
        if acc is not None:
            parts.append(f"{name} accuracy {acc * 100:.2f}% ({ref} {m[ref]['accuracy'] * 100:.2f}%)")
        verdicts = (r.get("speedup_verdict") or {}).get(name) or {}
        if r["speedup_p50"].get(name):
            # The verdict, not the bare ratio: a ratio of 0.84 printed as "faster" is the mistake this avoids.
            parts.append(f"{name} latency " + ", ".join(f"at batch {bs}: {speed_text(s, verdicts.get(bs), ref)}"
                                                        for bs, s in r["speedup_p50"][name].items()))
        if m[ref]["size_bytes"] and m[name]["size_bytes"]:
            parts.append(f"{m[ref]['size_bytes'] / m[name]['size_bytes']:.1f}x smaller")
    Console(highlight=False).print("qcompile: " + ", ".join(parts), soft_wrap=True)
