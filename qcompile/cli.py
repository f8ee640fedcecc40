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

from .errors import BadInput, QcompileError

err = Console(stderr=True, highlight=False)
_task_started = False


def _fail(e: QcompileError) -> int:
    label = {2: "bad input", 3: "gate failed"}.get(e.exit_code, "error")
    err.print(f"[bold red]qcompile: {label}:[/] {e}", soft_wrap=True)
    return e.exit_code


def _task(cfg) -> None:
    """Hydra's task function: one build per (multi)run job, in Hydra's output directory."""
    global _task_started
    _task_started = True
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .build import build
    from .recipe.load import to_container, validate

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        recipe = validate(to_container(cfg))
        result = build(recipe, out)
        _print_outcome(result)
    except QcompileError as e:
        code = _fail(e)
        if multirun:
            from .report.sweep import record_failure

            record_failure(out, e, list(hc.overrides.task))
            return
        if isinstance(e, BadInput):
            _remove_unbuilt(out)
        raise SystemExit(code) from None


def _remove_unbuilt(out: Path) -> None:
    """Drop the run dir Hydra made for a build that never started (it holds only Hydra's own files)."""
    import shutil

    if out.is_dir() and not (out / "report.json").exists():
        if all(p.name in (".hydra", "cli.log") for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)


def _print_outcome(result) -> None:
    r = result.report
    m = r["metrics"]
    parts = [f"built {r['recipe']} [bold]{r['build_id']}[/] in {result.out_dir}"]
    acc = r["metrics"]["int8"]["accuracy"]
    if acc is not None:
        parts.append(f"int8 accuracy {acc * 100:.2f}% (fp32 {m['fp32']['accuracy'] * 100:.2f}%)")
    if r["speedup_p50"]:
        bs, s = next(iter(r["speedup_p50"].items()))
        parts.append(f"{s:.2f}x faster at batch {bs}")
    if m["fp32"]["size_bytes"] and m["int8"]["size_bytes"]:
        parts.append(f"{m['fp32']['size_bytes'] / m['int8']['size_bytes']:.1f}x smaller")
    Console(highlight=False).print("qcompile: " + ", ".join(parts), soft_wrap=True)


def cmd_build(argv: list[str]) -> int:
    import hydra

    from .recipe.load import DEFAULT_RECIPE, RECIPES_MODULE

    main = hydra.main(config_path=f"pkg://{RECIPES_MODULE}", config_name=DEFAULT_RECIPE, version_base="1.3")(_task)
    saved = sys.argv
    sys.argv = ["qcompile", *argv]
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        # Hydra exits 1 on composition errors (unknown group option, bad override) before our task runs:
        # those are bad input, not bugs.
        return 2 if code == 1 and not _task_started else code
    finally:
        sys.argv = saved
    return 0


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-dir", "-cd", help="a folder of your own recipes (added to the packaged ones)")
    p.add_argument("--config-name", "-cn", default=None, help="recipe to use (default: demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for build")


def cmd_plan(args: argparse.Namespace) -> int:
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


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qcompile", description="Declarative compiler for quantized model deployment.")
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("build", help="build a recipe (Hydra arguments: --config-dir, --config-name, key=value, -m)",
                   add_help=False)
    _recipe_args(sub.add_parser("plan", help="show the step graph, keys and cache status without running"))
    s = sub.add_parser("schema", help="write the recipe JSON Schema")
    s.add_argument("--out", default="schemas/recipe.schema.json")
    s.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qcompile`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build":
        code = cmd_build(argv[1:])
    else:
        args = make_parser().parse_args(argv)
        handlers = {"plan": cmd_plan, "schema": cmd_schema}
        try:
            code = handlers[args.verb](args)
        except QcompileError as e:
            code = _fail(e)
    sys.exit(code)


if __name__ == "__main__":
    main()
