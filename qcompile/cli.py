"""The ``qcompile`` command: a thin layer over the library.

``build`` and ``plan`` compose their recipe through Hydra's compose API (``--config-dir``, ``--config-name``,
overrides); ``build -m`` sweeps run through Hydra's multirun. Exit codes: 0 built, 1 a bug, 2 bad input,
3 a quality gate failed, 4 a reproduction differs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .build_command import err, fail, user_os_error
from .errors import BadInput, QcompileError, as_bad_input

if TYPE_CHECKING:  # argparse costs 30 ms to import: a cached `qcompile build` never parses with it
    import argparse


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
    cache = Cache()
    outcomes = peek(plan, cache)
    for o in outcomes:
        node = plan.node(o.name)
        inputs = ", ".join(f"{slot}←{r.node}.{r.output}" for slot, r in node.inputs.items()) or "-"
        key = o.key[:12] if o.key else "(after inputs)"
        table.add_row(o.name, o.kind, inputs, key, f"[{colors[o.status]}]{o.status}[/]")
    Console().print(table)
    if getattr(args, "nodes", False):
        _print_nodes(outcomes, cache)
    return 0


def _print_nodes(outcomes, cache) -> None:
    """The FP32 model's nodes as quant.exclude names them, and what ORT's pre-processing made of each."""
    import json

    from rich.table import Table

    names = next((o.outputs.get("names") for o in outcomes if o.status == "cached" and "names" in o.outputs), None)
    if names is None:
        err.print("qcompile: the node names are known once the model is exported: run `qcompile build` once (or "
                  "open artifacts/model.fp32.onnx in netron)")
        return
    table = Table(title="nodes of model.fp32.onnx (quant.exclude.names / op_types)", title_justify="left")
    for col in ("name", "op type", "in the optimized model"):
        table.add_column(col)
    for n in json.loads(cache.blobs.path(names).read_text())["nodes"]:
        table.add_row(n["name"], n["op_type"], ", ".join(n["optimized"]) or "-")
    Console().print(table)


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

    from .builds.reproduce import explain, reproduce

    res = reproduce(args.lockfile, args.out, roots=args.root)
    table = Table(title=f"reproduce {res.build_id} → {res.out_dir}", title_justify="left")
    for col in ("step", "kind", "key", "outputs", "environment vs lockfile"):
        table.add_column(col)
    colors = {"same": "green", "expected": "yellow", "differs": "red", "missing": "red"}
    for n in res.nodes:
        label = {"expected": "differ (not in the build id)", "same": "identical"}.get(n.status, n.status)
        env = ", ".join(f"{k} {a}→{b}" for k, (a, b) in n.env_changes.items()) or "same"
        table.add_row(n.name, n.kind, "same" if n.key_same else "changed", f"[{colors[n.status]}]{label}[/]", env)
    Console().print(table)
    for k, (a, b) in res.env_changes.items():
        err.print(f"environment: {k}: {a} (lockfile) -> {b} (now)")
    first = res.first_difference
    if first is None:
        Console().print(f"reproduced: every deterministic artifact of {res.build_id} is identical"
                        + ("" if res.new_build_id == res.build_id else
                           f"; registered as {res.new_build_id} (the steps' keys changed: see the environment)"))
        return 0
    err.print(f"[bold red]not reproduced:[/] first differing step is {first.name} ({first.kind}): {explain(first)}")
    return 4


def cmd_checkout(args: argparse.Namespace) -> int:
    """``qcompile checkout``: copy a build's artifacts out of the cache by build id."""
    from .builds.reproduce import checkout

    for p in checkout(args.build_id, args.dir):
        Console().print(str(p))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``qcompile report``: write the sweep table and Pareto plot of a multirun folder."""
    from .report.sweep import write_sweep_report

    d = Path(args.multirun_dir)
    if not d.is_dir():
        raise BadInput(f"not a folder: {d}")
    for p in write_sweep_report(d, args.metric, args.batch).values():
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
                  f"{res.removed_tmp} scratch entries; kept {res.kept_builds} builds "
                  f"with lockfiles on disk and what {res.running_builds} running builds hold")
        if res.missed_target:
            held = "running builds" if args.include_kept else "kept builds (use --include-kept) or running builds"
            held += ", or written in the last hour"
            out.print(f"could not shrink to {manage.format_size(res.target_bytes)}: "
                      f"{manage.format_size(res.remaining_bytes)} remain, held by {held}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``qcompile run``: verify a bundle, preprocess the inputs as it says, print the top classes (or, for a text
    bundle, the sentences' embeddings and cosine similarities)."""
    from .bundle.run_bundle import run_bundle

    for line in run_bundle(args.bundle, args.inputs, args.top, args.first):
        Console(highlight=False).print(line, soft_wrap=True)
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb but ``build`` (whose arguments belong to Hydra)."""
    import argparse

    from . import __version__

    p = argparse.ArgumentParser(prog="qcompile", description="Declarative compiler for quantized model deployment.")
    p.add_argument("--version", action="version", version=f"qcompile {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("build", help="build a recipe (--config-dir, --config-name, key=value, -m; see build --help)",
                   add_help=False)
    plan_p = sub.add_parser("plan", help="show the step graph, keys and cache status without running")
    plan_p.add_argument("--nodes", action="store_true", help="also list the nodes of model.fp32.onnx by the names "
                        "quant.exclude takes (known once the model was exported, or read from an ONNX file)")
    _recipe_args(plan_p)
    s = sub.add_parser("schema", help="write the recipe JSON Schema")
    s.add_argument("--out", default="schemas/recipe.schema.json")
    s.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    r = sub.add_parser("reproduce", help="rebuild from a lockfile and compare every digest (exit 4 if they differ)")
    r.add_argument("lockfile")
    r.add_argument("--out", help="output folder (default: a new temp folder)")
    r.add_argument("--root", action="append", default=[], metavar="DIR|OLD=NEW",
                   help="the project's folder here (default: the one the lockfile names relative to itself); "
                        "OLD=NEW finds files recorded outside the project under OLD in NEW (repeatable)")
    c = sub.add_parser("checkout", help="copy a build's artifacts, lockfile and reports from the cache by build id")
    c.add_argument("build_id")
    c.add_argument("dir")
    rn = sub.add_parser("run", help="run a deployment bundle on images (or .npy/.npz samples): top classes; "
                        "a text bundle on sentences: their cosine similarities")
    rn.add_argument("bundle", help="bundle.zip, or its unpacked folder")
    # "*": no input is bad input in one line, after the bundle says whether it takes files or sentences.
    rn.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or one .npy/.npz; for a text bundle, "
                    "sentences (quote each one)")
    rn.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    rn.add_argument("--first", action="store_true", help="text bundles: compare the first sentence with each "
                    "other one only (default: every pair)")
    rp = sub.add_parser("report", help="sweep table (md, csv) and Pareto plot of a multirun folder")
    rp.add_argument("multirun_dir")
    rp.add_argument("--metric", metavar="NAME", help="plot and star by your metric eval.metrics.NAME instead of "
                    "accuracy (or cosine)")
    rp.add_argument("--batch", metavar="N", help="star and plot latency at this measured batch (8, or 8x128 for "
                    "batch x tokens); default: star at the largest, plot the smallest and largest side by side")
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


def _build(argv: list[str]) -> int:
    from .build_command import cmd_build, parse_build_args

    args = parse_build_args(argv)
    if args.multirun:
        from .sweep_command import cmd_sweep

        return cmd_sweep(args)
    return cmd_build(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qcompile`` console script."""
    import os
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    # A SLURM time limit or `kill` sends SIGTERM: stop as on Ctrl-C (clean message, nothing half-written).
    signal.signal(signal.SIGTERM, _terminated)
    try:
        try:
            if argv and argv[0] == "build":
                code = _build(argv[1:])
            else:
                args = make_parser().parse_args(argv)
                handlers = {"plan": cmd_plan, "schema": cmd_schema, "reproduce": cmd_reproduce,
                            "checkout": cmd_checkout, "report": cmd_report, "cache": cmd_cache,
                            "run": cmd_run}
                code = handlers[args.verb](args)
        except QcompileError as e:
            code = fail(_traced(e))
        except OSError as e:
            if as_bad_input(e) is None:
                raise
            code = fail(_traced(e, user_os_error(e)))
    except BrokenPipeError:
        # The reader went away (`qcompile build --help | head`): no traceback, and no second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    except KeyboardInterrupt as e:
        # The step in flight recorded nothing and removed its scratch folder; finished steps stay cached.
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        err.print(f"qcompile: {how}; finished steps are cached and the next build resumes from them")
        code = 143 if isinstance(e, Terminated) else 130
    sys.exit(code)


FULL_ERROR = "QCOMPILE_FULL_ERROR"


def _traced(e: BaseException, shown: QcompileError | None = None) -> QcompileError:
    """What to print for ``e`` (``shown``, else ``e``): with QCOMPILE_FULL_ERROR=1 its traceback goes to stderr
    first; without, bad input raised from another error (the user's function, a library) says how to see that
    error's traceback. Bad input leaves nothing in the cache, so the traceback lives only here."""
    import os

    shown = shown or e  # type: ignore[assignment]
    if os.environ.get(FULL_ERROR, "") not in ("", "0"):
        import traceback

        traceback.print_exception(e)
    elif isinstance(shown, BadInput) and e.__cause__ is not None:
        return BadInput(f"{shown} ({FULL_ERROR}=1 shows its traceback)")
    return shown  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so the same clean-up as Ctrl-C runs."""


def _terminated(signum, frame) -> None:
    raise Terminated()


if __name__ == "__main__":
    # Re-import under the real module name, so the CLI's classes (Terminated) are those the rest of qcompile sees.
    from qcompile.cli import main as _main

    _main()
