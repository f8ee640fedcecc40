"""``qcompile build``: compose the recipe with Hydra's compose API, validate it, build it into its folder.

Sweeps (``-m``) go to ``sweep_command``, which runs Hydra's multirun and builds each job with ``build_composed``.
Exit codes: 0 built, 1 a bug, 2 bad input, 3 a quality gate failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .errors import BadInput, GateFailed, QcompileError, as_bad_input

if TYPE_CHECKING:
    from .builds import BuildResult
    from .recipe.compose import Composition

err = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class BuildArgs:
    """What ``qcompile build`` was asked: the recipe, its overrides, and how to build it."""

    config_name: str
    config_dir: str | None
    overrides: tuple[str, ...]
    remeasure: bool = False
    multirun: bool = False


SHOWN_NEXT_STEPS = 4  # stderr stays a few lines; report.md lists them all


def fail(e: QcompileError) -> int:
    """Print ``e`` on stderr (one line; a failed gate adds what to try next and where the report is); return its
    exit code."""
    label = {2: "bad input", 3: "gate failed"}.get(e.exit_code, "error")
    from rich.markup import escape

    # escape: messages hold brackets ("pip install 'qcompile[ray]'", "std[0]") that rich would read as markup
    if isinstance(e, GateFailed):
        for line in gate_lines(e):
            head, sep, rest = line.partition(": gate failed: ")
            err.print(f"[bold red]{head}{sep}[/]{escape(rest)}" if sep else escape(line), soft_wrap=True)
        return e.exit_code
    err.print(f"[bold red]qcompile: {label}:[/] {escape(str(e))}", soft_wrap=True)
    return e.exit_code


def gate_lines(e: GateFailed) -> list[str]:
    """What the CLI says of a failed gate: each failed gate, then "next:" lines (the likeliest of
    ``e.next_steps``), then where the report is and that the bundle is not for deployment."""
    gates = [g["message"] for g in (e.report or {}).get("gates") or []] or [str(e)]
    lines = [f"qcompile: gate failed: {m}" for m in gates]
    failure = ((e.report or {}).get("search") or {}).get("failure")
    if failure:
        lines.append(f"  {failure}")
    shown = e.next_steps[:SHOWN_NEXT_STEPS]
    lines += [f"  next: {s}" for s in shown]
    if e.out_dir is not None:
        out = Path(e.out_dir)
        more = len(e.next_steps) - len(shown)
        line = f"  report: {out / 'report.md'}" + (f" ({more} more next steps there)" if more else "")
        bundles = [a["path"] for a in (e.report or {}).get("artifacts") or [] if a.get("step") == "package"]
        if bundles:
            line += f"; {', '.join(str(out / b) for b in bundles)} is not for deployment (GATE_FAILED.txt beside it)"
        lines.append(line)
    return lines


def user_os_error(e: OSError) -> BadInput:
    """The one-line bad input for an OS error the user's environment caused (full disk, read-only cache)."""
    from .cache import default_cache_dir

    return as_bad_input(e, default_cache_dir())  # type: ignore[return-value]


def parse_build_args(argv: list[str]) -> BuildArgs:
    """Parse ``qcompile build``'s arguments (argparse prints ``--help`` and exits 0, or exits 2 on bad flags)."""
    import argparse

    from .recipe.compose import DEFAULT_RECIPE
    from .recipe.listing import help_footer

    p = argparse.ArgumentParser(
        prog="qcompile build", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compile a recipe into a quantized, measured model and its deployment bundle.",
        epilog=help_footer())
    p.add_argument("--config-dir", "-cd", help="a folder of your own recipes, searched before the packaged ones")
    p.add_argument("--config-name", "-cn", default=DEFAULT_RECIPE, help=f"recipe to build (default: {DEFAULT_RECIPE})")
    p.add_argument("--remeasure", action="store_true", help="time the models again even when cached")
    p.add_argument("--multirun", "-m", action="store_true", help="sweep: build every combination of a,b values")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides: quant.per_channel=false, "
                   "model=resnet18, ~quant.calibration (back to defaults), hydra.run.dir=out")
    a = p.parse_args(argv)
    return BuildArgs(a.config_name, a.config_dir, tuple(a.overrides), a.remeasure, a.multirun)


def cmd_build(args: BuildArgs) -> int:
    """``qcompile build`` without ``-m``: one build, into ``hydra.run.dir``; returns the exit code."""
    from .recipe.compose import compose

    composition = compose(args.config_name, args.overrides, args.config_dir)
    result = build_composed(composition, Path(composition.run_dir), args.remeasure)
    print_outcome(result)
    return 0


def build_composed(composition: Composition, out: Path, remeasure: bool = False) -> BuildResult:
    """Validate a composed recipe, claim ``out``, record the composition there, and build into it.

    Nothing is written before the recipe validates; a build that fails on bad input removes what it created.
    """
    from .builds import build
    from .builds.portable import project_root
    from .builds.rundir import abandon, claim
    from .recipe.load import validate

    recipe = validate(composition.data)
    claim(out)
    try:
        composition.write(out)
    except BaseException:
        abandon(out)
        raise
    return build(recipe, out, remeasure=remeasure, root=project_root(composition.config_dir))


def print_outcome(result: BuildResult) -> None:
    """The build's last line: its id and folder, each variant's accuracy, speed verdicts and size."""
    from .report.build_report import speed_text
    from .report.pareto import point_label

    r = result.report
    m, ref = r["metrics"], r["reference"]
    if r["gates"]:
        # Only a build that skipped the gate check gets here with a failed gate: never word it as a success.
        Console(highlight=False, stderr=True).print(
            f"qcompile: build {r['recipe']} {r['build_id']} failed its gate, its bundle is not for deployment: "
            f"see {result.out_dir / 'report.md'}", soft_wrap=True)
        return
    parts = [f"built {r['recipe']} [bold]{r['build_id']}[/] in {result.out_dir}"]
    for name in r["variants"]:
        if name == ref:
            continue
        acc = m[name]["accuracy"]
        if acc is not None:
            parts.append(f"{name} accuracy {acc * 100:.2f}% ({ref} {m[ref]['accuracy'] * 100:.2f}%)")
        for metric, value in sorted((m[name].get("user") or {}).items()):
            ref_value = (m[ref].get("user") or {}).get(metric)
            if value is not None and ref_value is not None:
                parts.append(f"{name} {metric} {value:.4g} ({ref} {ref_value:.4g})")
        rho = m[name].get("spearman")
        if rho is not None and m[ref].get("spearman") is not None:
            parts.append(f"{name} Spearman {rho:.4f} ({ref} {m[ref]['spearman']:.4f})")
        verdicts = (r.get("speedup_verdict") or {}).get(name) or {}
        if r["speedup_p50"].get(name):
            # The verdict, not the bare ratio: a ratio of 0.84 printed as "faster" is the mistake this avoids.
            parts.append(f"{name} latency " + ", ".join(f"at {point_label(bs)}: {speed_text(s, verdicts.get(bs), ref)}"
                                                        for bs, s in r["speedup_p50"][name].items()))
        if m[ref]["size_bytes"] and m[name]["size_bytes"]:
            parts.append(f"{m[ref]['size_bytes'] / m[name]['size_bytes']:.1f}x smaller")
    Console(highlight=False).print("qcompile: " + ", ".join(parts), soft_wrap=True)
