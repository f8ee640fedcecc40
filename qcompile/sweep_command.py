"""``qcompile build -m``: a sweep through Hydra's multirun, so Hydra's launchers and sweepers run the jobs.

qcompile first checks the overrides against the schema and composes the recipe without its sweep values (bad input
is reported before any job starts, and the sweep folder is resolved once, here); Hydra then runs each job, which
composes as ``qcompile build`` does and builds with ``build_composed``. The sweep exits with its worst job's code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from hydra.experimental.callback import Callback

from .build_command import BuildArgs, build_composed, fail, print_outcome, user_os_error
from .builds.rundir import abandon, claim
from .errors import BadInput, QcompileError, as_bad_input

# Launcher recipe -> (plugin module it needs, extra that installs it).
LAUNCHERS = {"parallel": ("hydra_plugins.hydra_joblib_launcher", "sweep"),
             "local_jobs": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
             "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
             "ray_cluster": ("hydra_plugins.hydra_ray_launcher", "ray")}


def cmd_sweep(args: BuildArgs) -> int:
    """Run the sweep ``args`` describes; return the worst exit code of its jobs (2 when it could not start)."""
    import hydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from .kinds import GROUPS
    from .recipe.compose import RECIPES_MODULE, compose
    from .recipe.load import validate
    from .recipe.overrides import check_key
    from .recipe.schema import Recipe
    from .report.sweep import sweep_exit_code

    for o in args.overrides:
        if o.startswith("hydra/launcher="):
            _check_launcher(o.split("=", 1)[1])
    try:
        parsed = OverridesParser.create().parse_overrides(list(args.overrides))
    except HydraException as e:
        raise BadInput(str(e).splitlines()[0]) from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    for o in parsed:  # each job validates its own recipe; a misspelt key would fail them all, so say it now
        key = o.key_or_group
        if key.split(".")[0] in Recipe.model_fields and key not in GROUPS:
            check_key(key)
    composition = compose(args.config_name, fixed, args.config_dir, sweep=True)
    if not any(o.is_sweep_override() and o.key_or_group in GROUPS for o in parsed):
        validate(composition.data)  # every job shares these values: a bad one is said once, before any job
    _check_report_batch(parsed, composition.data)
    if args.quiet_below is not None:  # once, before the first job: the jobs' own work is the load after that
        from .build_command import wait_until_quiet

        wait_until_quiet(args.quiet_below, args.quiet_wait)
    sweep_dir = Path(composition.sweep_dir).resolve()
    job = SweepJob(args.config_name, composition.config_dir, composition.overrides.deletions, args.remeasure)
    argv = ["--config-name", args.config_name, "--multirun", *composition.overrides.hydra]
    argv += [*_hydra_overrides(o for o in args.overrides if o not in fixed), f"hydra.sweep.dir={_quoted(sweep_dir)}"]
    if composition.config_dir is not None:
        argv[:0] = ["--config-dir", str(composition.config_dir)]
    main = hydra.main(config_path=f"pkg://{RECIPES_MODULE}", config_name=args.config_name, version_base="1.3")(job)
    # Hydra's main reads the process's arguments (its public contract); they are set for that call only.
    saved = sys.argv
    sys.argv = ["qcompile build", *argv]
    try:
        main()
    except SystemExit as e:
        if e.code in (0, None):
            return 0
        # Hydra exits 1 on what it could not compose or launch: the user's input, as every job reports its own.
        # A sweep that started no job leaves its folder free for the corrected command.
        started = sweep_dir.is_dir() and any(p.is_dir() and p.name.isdigit() for p in sweep_dir.iterdir())
        if not started:
            abandon(sweep_dir)
        return 2
    finally:
        sys.argv = saved
    return sweep_exit_code(sweep_dir)


def _check_report_batch(parsed: list[Any], data: dict[str, Any]) -> None:
    """Bad input before any job starts when the sweep report is asked for a batch size (``+hydra.callbacks.
    sweep_report.batch=N``) that ``bench.batch_sizes`` does not time; a sweep over bench options is left to the
    report, which names what its jobs measured."""
    from pydantic import ValidationError

    from .kinds.measure import BenchSpec
    from .report.sweep import SweepReportCallback

    batch = next((o.value() for o in parsed if o.key_or_group == SweepReportCallback.OPTION
                  and not o.is_sweep_override()), None)
    if batch is None or any(o.is_sweep_override() and o.key_or_group.startswith("bench") for o in parsed):
        return
    try:
        sizes = BenchSpec.model_validate(data.get("bench") or {}).batch_sizes
    except ValidationError:
        return  # every job reports its bench section's error itself
    if str(batch).partition("x")[0].strip() not in {str(b) for b in sizes}:
        raise BadInput(f"batch {batch} is not measured by this sweep: bench.batch_sizes is "
                       f"[{', '.join(map(str, sizes))}]", key=SweepReportCallback.OPTION)


def _quoted(path: Path) -> str:
    """``path`` as a quoted value of Hydra's override grammar (a folder may hold ',', '=' or quotes)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hydra_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides as Hydra gets them: field changes as ``++`` (see recipe.overrides), deletions left out."""
    from .recipe.overrides import prepare

    return list(prepare(overrides).hydra)


def _check_launcher(name: str) -> None:
    """Say which extra a launcher needs before Hydra fails to load it."""
    import importlib.util

    need = LAUNCHERS.get(name)
    try:
        missing = need is not None and importlib.util.find_spec(need[0]) is None
    except ModuleNotFoundError:  # not even the hydra_plugins namespace
        missing = True
    if need and missing:
        raise BadInput(f"hydra/launcher={name} needs the {need[1]!r} extra: pip install 'qcompile[{need[1]}]'",
                       key="hydra/launcher")


@dataclass(frozen=True)
class SweepJob:
    """Hydra's task for one job of a sweep: build the job's composition into its folder, recording any failure
    there (``failure.json``) so the other jobs go on and the sweep table lists it. Launchers pickle it."""

    config_name: str
    config_dir: Path | None
    deletions: tuple[str, ...]
    remeasure: bool

    def __call__(self, cfg: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from .recipe.compose import from_config
        from .recipe.overrides import Overrides
        from .report.sweep import record_failure

        hc = HydraConfig.get()
        out = Path(hc.runtime.output_dir)
        given = tuple(o.removeprefix("++") for o in hc.overrides.task) + tuple(f"~{k}" for k in self.deletions)
        try:
            composition = from_config(cfg, self.config_name, self.config_dir,
                                      Overrides(given, tuple(hc.overrides.task), self.deletions), out_key=None)
            print_outcome(build_composed(composition, out, self.remeasure))
        except Exception as e:
            if isinstance(e, OSError) and as_bad_input(e) is not None:
                e = user_os_error(e)
            if not isinstance(e, QcompileError):
                import traceback

                traceback.print_exc()
                e = QcompileError(f"{type(e).__name__}: {e}")
            fail(e)
            record_failure(out, e, list(given))


class SweepDirClaim(Callback):
    """Hydra callback: claim the sweep's folder before Hydra writes there; a second sweep into it would rewrite
    its jobs' records."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """Claim ``hydra.sweep.dir``; on a conflict print one line and exit 2 before anything is written."""
        try:
            claim(str(config.hydra.sweep.dir))
        except BadInput as e:
            fail(e)
            raise SystemExit(2) from None
