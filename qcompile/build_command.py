"""``qcompile build``: compose the recipe with Hydra's compose API, validate it, build it into its folder.

Sweeps (``-m``) go to ``sweep_command``, which runs Hydra's multirun and builds each job with ``build_composed``.
Exit codes: 0 built, 1 a bug, 2 bad input, 3 a quality gate failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .errors import BadInput, GateFailed, QcompileError, as_bad_input, naming

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
    quiet_below: float | None = None
    quiet_wait: float = 600.0


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
    p.add_argument("--quiet-below", metavar="LOAD", help="before building, wait until the 1-minute load average "
                   "is below LOAD (e.g. the number of cores), at most --quiet-wait seconds")
    p.add_argument("--quiet-wait", metavar="SECONDS", default="600",
                   help="the longest --quiet-below waits before measuring anyway (default 600)")
    p.add_argument("--multirun", "-m", action="store_true", help="sweep: build every combination of a,b values")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides: quant.per_channel=false, "
                   "model=resnet18, ~quant.calibration (back to defaults), hydra.run.dir=out")
    a = p.parse_args(argv)
    quiet = _non_negative("--quiet-below", a.quiet_below) if a.quiet_below is not None else None
    return BuildArgs(a.config_name, a.config_dir, tuple(a.overrides), a.remeasure, a.multirun, quiet,
                     _non_negative("--quiet-wait", a.quiet_wait))


def _non_negative(option: str, text: str) -> float:
    """``text`` as a finite number >= 0; bad input naming ``option`` otherwise (one line, exit 2)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"{option} takes a number >= 0, got {text!r}")
    return value


def cmd_build(args: BuildArgs) -> int:
    """``qcompile build`` without ``-m``: one build, into ``hydra.run.dir``; returns the exit code."""
    from .recipe.compose import compose

    composition = compose(args.config_name, args.overrides, args.config_dir)
    if args.quiet_below is not None:
        wait_until_quiet(args.quiet_below, args.quiet_wait)
    result = build_composed(composition, Path(composition.run_dir), args.remeasure)
    print_outcome(result)
    return 0


def wait_until_quiet(below: float, wait_s: float) -> None:
    """``--quiet-below``: wait (bounded) for the load average to fall below ``below``, saying what it waits for; a
    machine still busy at the deadline is measured anyway, and the report says it was busy."""
    from .steps.host_load import load_1min, wait_for_quiet

    said = []

    def on_wait(load: float, left: float) -> None:
        if not said or said[-1] - left >= 30:  # a line every 30 s, not every poll
            said.append(left)
            err.print(f"qcompile: waiting for a quiet machine: 1-minute load average {load:.2f}, not below "
                      f"{below:g}; {left:.0f} s left", soft_wrap=True)

    quiet, load = wait_for_quiet(below, wait_s, on_wait=on_wait)
    if not quiet:
        err.print(f"qcompile: the load average is still {load:.2f} after {wait_s:g} s: measuring anyway (the report "
                  "says the machine was busy)", soft_wrap=True)
    elif said:
        err.print(f"qcompile: the load average fell to {load_1min() or 0:.2f}: building", soft_wrap=True)


def build_composed(composition: Composition, out: Path, remeasure: bool = False) -> BuildResult:
    """Validate a composed recipe, claim ``out``, record the composition there, and build into it.

    Nothing is written before the recipe validates; a build that fails on bad input removes what it created.
    """
    from .builds import build
    from .builds.portable import project_root
    from .builds.rundir import abandon, claim
    from .recipe.load import validate

    recipe = validate(composition.data)
    with naming(out):  # a full disk names no file when a write fails: the cache's writes name theirs, these the folder
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
    busy = r.get("busy") or {}
    if busy:
        step, why = next(iter(busy.items()))
        more = f" (and {len(busy) - 1} more measurements)" if len(busy) > 1 else ""
        parts.append(f"measured on a busy machine: {step}: {why}{more}; see report.md, or rebuild with "
                     "--remeasure --quiet-below LOAD")
    Console(highlight=False).print("qcompile: " + ", ".join(parts), soft_wrap=True)
