"""The ``qcompile`` command: a thin layer over the library.

``build`` hands its arguments to Hydra (so ``--config-dir``, ``--config-name``, overrides and ``-m`` sweeps work
as Hydra users expect); the other verbs parse their own. Exit codes: 0 built, 1 a bug, 2 bad input,
3 a quality gate failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from .errors import BadInput, QcompileError, as_bad_input

err = Console(stderr=True, highlight=False)
_bug_seen = False  # set when a build raised something other than a QcompileError


def _fail(e: QcompileError) -> int:
    label = {2: "bad input", 3: "gate failed"}.get(e.exit_code, "error")
    from rich.markup import escape

    # escape: messages hold brackets ("pip install 'qcompile[ray]'", "std[0]") that rich would read as markup
    err.print(f"[bold red]qcompile: {label}:[/] {escape(str(e))}", soft_wrap=True)
    return e.exit_code


def _task(cfg) -> None:
    """Hydra's task function: one build per (multi)run job, in Hydra's output directory."""
    global _bug_seen
    import os

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .build import build
    from .recipe.deletions import ENV, apply_deletions
    from .recipe.files import resolve_relative_paths
    from .recipe.load import to_container, validate

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        user_dir = next((s.path for s in hc.runtime.config_sources if s.provider == "command-line"), None)
        deletions = [k for k in os.environ.get(ENV, "").split(",") if k]
        data = resolve_relative_paths(apply_deletions(to_container(cfg), deletions), user_dir, hc.job.config_name,
                                      dict(hc.runtime.choices), list(hc.overrides.task))
        recipe = validate(data)
        result = build(recipe, out)
        _print_outcome(result)
    except Exception as e:
        if isinstance(e, OSError) and as_bad_input(e) is not None:
            e = _user_os_error(e)  # a full disk, a read-only cache: the user's to fix, no traceback
        if not isinstance(e, QcompileError):
            # A bug: show the traceback, and mark it so the exit code stays 1 (see cmd_build).
            import traceback

            traceback.print_exc()
            _bug_seen = True
            e = QcompileError(f"{type(e).__name__}: {e}")
        code = _fail(e)
        if multirun:
            from .report.sweep import record_failure

            record_failure(out, e, list(hc.overrides.task))
            return  # the other variants go on; the sweep's exit code is the worst job's
        if isinstance(e, BadInput):
            from .build.rundir import abandon

            abandon(out)  # removes the folder only when this build created it
        raise SystemExit(code) from None


def _user_os_error(e: OSError) -> BadInput:
    from .cache import default_cache_dir

    return as_bad_input(e, default_cache_dir())  # type: ignore[return-value]


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


def cmd_build(argv: list[str]) -> int:
    """``qcompile build``: hand the arguments to Hydra; return the exit code.

    ``--remeasure`` (ours, not Hydra's) re-runs the measurement steps even when cached; the rest is Hydra's.
    """
    import os

    import hydra

    from .compose_once import compose_once
    from .recipe.deletions import ENV, split_deletions
    from .recipe.load import DEFAULT_RECIPE, RECIPES_MODULE

    remeasure = "--remeasure" in argv
    argv, deletions = split_deletions([a for a in argv if a != "--remeasure"])
    _check_user_recipes(argv)
    main = hydra.main(config_path=f"pkg://{RECIPES_MODULE}", config_name=DEFAULT_RECIPE, version_base="1.3")(_task)
    # Through the environment rather than a global: sweep launchers run builds in other processes (joblib,
    # submitit, SLURM), which inherit the environment. build() reads QCOMPILE_REMEASURE.
    saved_env = os.environ.get("QCOMPILE_REMEASURE")
    if remeasure:
        os.environ["QCOMPILE_REMEASURE"] = "1"
    saved_deletions = os.environ.pop(ENV, None)
    if deletions:
        os.environ[ENV] = ",".join(deletions)  # applied by _task after Hydra composes (see recipe/deletions.py)
    saved = sys.argv
    sys.argv = ["qcompile", *argv]
    try:
        with compose_once(argv):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        # Hydra itself exits 1 on composition errors (unknown group option, bad override syntax): those are
        # bad input. Our task exits 1 only for a bug, and says so through _bug_seen.
        return 2 if code == 1 and not _bug_seen else code
    finally:
        sys.argv = saved
        os.environ.pop(ENV, None)
        if saved_deletions is not None:
            os.environ[ENV] = saved_deletions
        if remeasure:
            if saved_env is None:
                os.environ.pop("QCOMPILE_REMEASURE", None)
            else:
                os.environ["QCOMPILE_REMEASURE"] = saved_env
    from .report import sweep

    return sweep.LAST_SWEEP_EXIT_CODE  # 0 after a single build or an all-green sweep


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


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-dir", "-cd", help="a folder of your own recipes (added to the packaged ones)")
    p.add_argument("--config-name", "-cn", default=None, help="recipe to use (default: demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for build")


def cmd_plan(args: argparse.Namespace) -> int:
    """``qcompile plan``: print every node, its inputs, key and cache status."""
    from rich.table import Table

    from .cache import Cache
    from .plan import compile_plan
    from .recipe.load import DEFAULT_RECIPE, load_recipe
    from .run.scheduler import peek

    recipe = load_recipe(args.config_name or DEFAULT_RECIPE, args.overrides, args.config_dir)
    plan = compile_plan(recipe)
    table = Table(title=f"plan: {recipe.name}", title_justify="left")
    for col in ("step", "kind", "inputs", "key", "status"):
        table.add_column(col)
    colors = {"cached": "blue", "will run": "yellow", "pending": "dim"}
    for o in peek(plan, Cache()):
        node = plan.node(o.name)
        inputs = ", ".join(f"{slot}←{r.node}.{r.output}" for slot, r in node.inputs.items()) or "-"
        key = o.key[:12] if o.key else "(after inputs)"
        table.add_row(o.name, o.kind, inputs, key, f"[{colors[o.status]}]{o.status}[/]")
    Console().print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """``qcompile schema``: write (or ``--check``) the recipe JSON Schema."""
    import json

    from .recipe.schema import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            err.print(f"{out} is stale: run `qcompile schema`")
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    err.print(f"wrote {out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``qcompile reproduce``: rebuild from a lockfile and compare digests (exit 4 on a difference)."""
    from rich.table import Table

    from .build.reproduce import explain, reproduce

    res = reproduce(args.lockfile, args.out)
    table = Table(title=f"reproduce {res.build_id} → {res.out_dir}", title_justify="left")
    for col in ("step", "kind", "key", "outputs", "environment vs lockfile"):
        table.add_column(col)
    colors = {"same": "green", "expected": "yellow", "differs": "red", "missing": "red"}
    for n in res.nodes:
        label = {"expected": "differ (a measurement)", "same": "identical"}.get(n.status, n.status)
        env = ", ".join(f"{k} {a}→{b}" for k, (a, b) in n.env_changes.items()) or "same"
        table.add_row(n.name, n.kind, "same" if n.key_same else "changed", f"[{colors[n.status]}]{label}[/]", env)
    Console().print(table)
    for k, (a, b) in res.env_changes.items():
        err.print(f"environment: {k}: {a} (lockfile) -> {b} (now)")
    first = res.first_difference
    if first is None:
        Console().print(f"reproduced: every deterministic artifact of {res.build_id} is identical")
        return 0
    err.print(f"[bold red]not reproduced:[/] first differing step is {first.name} ({first.kind}): {explain(first)}")
    return 4


def cmd_checkout(args: argparse.Namespace) -> int:
    """``qcompile checkout``: copy a build's artifacts out of the cache by build id."""
    from .build.reproduce import checkout

    for p in checkout(args.build_id, args.dir):
        Console().print(str(p))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``qcompile report``: write the sweep table and Pareto plot of a multirun folder."""
    from .report.sweep import write_sweep_report

    d = Path(args.multirun_dir)
    if not d.is_dir():
        raise BadInput(f"not a folder: {d}")
    for p in write_sweep_report(d).values():
        Console().print(str(p))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``qcompile cache``: ls, info, verify or gc the cache."""
    import datetime

    from .cache import Cache, manage

    cache = Cache()
    out = Console()
    if args.action == "info":
        for k, v in manage.info(cache).items():
            out.print(f"{k:>9}: {v}")
    elif args.action == "ls":
        fmt = lambda t: datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")  # noqa: E731
        if args.failed:
            for f in manage.list_failures(cache):
                out.print(f"{f['key'][:12]}  {f['kind']:<24} {fmt(f['time'])}  {f['error'].splitlines()[-1][:100]}")
        elif args.builds:
            for _, b in cache.iter_builds():
                out.print(f"{b['build_id']}  {fmt(b['time'])}  {', '.join(b['lockfiles'])}")
        else:
            for r in manage.list_records(cache):
                out.print(f"{r['key'][:12]}  {r['kind']:<24} {r['bytes']:>12,} B  used {fmt(r['last_used'])}")
    elif args.action == "verify":
        checked, problems = manage.verify(cache)
        for p in problems:
            err.print(p)
        out.print(f"verified {checked} entries (blobs, records, builds): {len(problems)} problem(s)")
        return 1 if problems else 0
    elif args.action == "gc":
        if args.older_than is None and args.max_size is None and not args.tmp_only:
            raise BadInput("say what to collect: --older-than DAYS and/or --max-size SIZE (or --tmp-only)")
        try:
            max_bytes = manage.parse_size(args.max_size) if args.max_size else None
        except ValueError:
            raise BadInput(f"{args.max_size!r} is not a size (e.g. 500MB, 20GB, 1.5GiB)", key="--max-size") from None
        res = manage.gc(cache, args.older_than, max_bytes,
                        include_kept=args.include_kept, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        out.print(f"{verb} {res.removed_records} records, {res.removed_blobs} blobs ({res.freed_bytes:,} B), "
                  f"{res.removed_tmp} scratch entries; kept {res.kept_builds} builds with lockfiles on disk "
                  f"and what {res.running_builds} running builds hold")
        if res.missed_target:
            held = "running builds" if args.include_kept else "kept builds (use --include-kept) or running builds"
            held += ", or written in the last hour"
            out.print(f"could not shrink to {manage.format_size(res.target_bytes)}: "
                      f"{manage.format_size(res.remaining_bytes)} remain, held by {held}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``qcompile run``: verify a bundle, preprocess the inputs as it says, print the top classes."""
    from .bundle.run_bundle import run_bundle

    for line in run_bundle(args.bundle, args.inputs, args.top):
        Console(highlight=False).print(line, soft_wrap=True)
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb but ``build`` (whose arguments belong to Hydra)."""
    from . import __version__

    p = argparse.ArgumentParser(prog="qcompile", description="Declarative compiler for quantized model deployment.")
    p.add_argument("--version", action="version", version=f"qcompile {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("build", help="build a recipe (Hydra arguments: --config-dir, --config-name, key=value, -m)",
                   add_help=False)
    _recipe_args(sub.add_parser("plan", help="show the step graph, keys and cache status without running"))
    s = sub.add_parser("schema", help="write the recipe JSON Schema")
    s.add_argument("--out", default="schemas/recipe.schema.json")
    s.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    r = sub.add_parser("reproduce", help="rebuild from a lockfile and compare every digest (exit 4 if they differ)")
    r.add_argument("lockfile")
    r.add_argument("--out", help="output folder (default: a new temp folder)")
    c = sub.add_parser("checkout", help="copy a build's artifacts from the cache by build id")
    c.add_argument("build_id")
    c.add_argument("dir")
    rn = sub.add_parser("run", help="run a deployment bundle on images (or .npy/.npz samples): top classes")
    rn.add_argument("bundle", help="bundle.zip, or its unpacked folder")
    rn.add_argument("inputs", nargs="+", metavar="IMAGE_OR_NPY")
    rn.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    rp = sub.add_parser("report", help="sweep table (md, csv) and Pareto plot of a multirun folder")
    rp.add_argument("multirun_dir")
    k = sub.add_parser("cache", help="inspect and clean the cache")
    k.add_argument("action", choices=["ls", "info", "verify", "gc"])
    k.add_argument("--failed", action="store_true", help="ls: failed steps and their errors")
    k.add_argument("--builds", action="store_true", help="ls: builds by id, with their lockfiles")
    k.add_argument("--older-than", type=float, metavar="DAYS", help="gc: records unused for this many days")
    k.add_argument("--max-size", metavar="SIZE", help="gc: shrink to this size, least recently used first (e.g. 5GB)")
    k.add_argument("--include-kept", action="store_true", help="gc: also what kept lockfiles need")
    k.add_argument("--tmp-only", action="store_true", help="gc: only scratch left by killed builds")
    k.add_argument("--dry-run", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qcompile`` console script."""
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    # A SLURM time limit or `kill` sends SIGTERM: stop as on Ctrl-C (clean message, nothing half-written).
    signal.signal(signal.SIGTERM, _terminated)
    try:
        try:
            if argv and argv[0] == "build":
                code = cmd_build(argv[1:])
            else:
                args = make_parser().parse_args(argv)
                handlers = {"plan": cmd_plan, "schema": cmd_schema, "reproduce": cmd_reproduce,
                            "checkout": cmd_checkout, "report": cmd_report, "cache": cmd_cache,
                            "run": cmd_run}
                code = handlers[args.verb](args)
        except QcompileError as e:
            code = _fail(e)
        except OSError as e:
            if as_bad_input(e) is None:
                raise
            code = _fail(_user_os_error(e))
    except KeyboardInterrupt as e:
        # The step in flight recorded nothing and removed its scratch folder; finished steps stay cached.
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        err.print(f"qcompile: {how}; finished steps are cached and the next build resumes from them")
        code = 143 if isinstance(e, Terminated) else 130
    sys.exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so the same clean-up as Ctrl-C runs."""


def _terminated(signum, frame) -> None:
    raise Terminated()


if __name__ == "__main__":
    # Re-import under the real module name: sweep launchers pickle the task function by reference, which
    # fails for functions that live in __main__.
    from qcompile.cli import main as _main

    _main()
