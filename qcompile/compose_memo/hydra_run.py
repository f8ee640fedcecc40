"""What Hydra's run does around the task, described from one run so that it can be done again without Hydra.

:func:`describe` keeps only what it can reproduce exactly and refuses the rest: the run folder's pattern (literal
parts and ``now`` formats), the two logging configurations (standard handlers only, interpolating nothing but the
output folder and the job name), the three ``.hydra/`` files as Hydra wrote them. :func:`start_run` replays it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT_TOKEN = "/qcompile-compose-memo/output-dir"
# An output path Hydra's YAML writes as a plain scalar, so replacing the token gives Hydra's exact bytes.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./+-]*")
_RESOLVER = re.compile(r"\$\{[^}]*:")  # ${name:...}: a resolver call, not a plain ${a.b} reference
_NOW = re.compile(r"\$\{now:([^}]*)\}")
_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
_INTERPOLATION = re.compile(r"\$\{[^}]*\}")
_CALLBACKS = {"run_dir_claim": "qcompile.callbacks.RunDirClaim",
              "sweep_report": "qcompile.report.sweep.SweepReportCallback"}
# Parts of the hydra node a single run does not use, or that describe() checks on its own.
_UNUSED_IN_RUN = ("sweep", "help", "hydra_help", "launcher", "sweeper", "run", "job_logging", "hydra_logging")
_LOG_REFS = {"job_logging": {"${hydra.runtime.output_dir}", "${hydra.job.name}"}, "hydra_logging": set()}
_LOG_HANDLERS = {"logging.StreamHandler", "logging.FileHandler"}
_LOG_STREAMS = {None, "ext://sys.stdout", "ext://sys.stderr"}


@dataclass
class Composed:
    """What a plain run's composition gave, and what Hydra did around the task."""

    recipe: dict[str, Any]  # the resolved config without ``hydra``, before qcompile's deletions and path fixes
    user_dir: str | None  # the --config-dir, as Hydra recorded it
    config_name: str
    choices: dict[str, Any]
    task_overrides: list[str]
    run_dir: list[Any]  # literal strings and {"now": format} parts
    output_subdir: str | None
    hydra_files: dict[str, str]  # .hydra/ file name -> text (hydra.yaml with the output folder as a token)
    hydra_logging: dict[str, Any] | None
    job_logging: dict[str, Any] | None  # with the output folder as a token


def describe(task_cfg: Any, hc: Any, out: Path, recipe: dict[str, Any], user_dir: str | None) -> Composed | None:
    """The run Hydra just made, or None when a memo could not do it again exactly."""
    from omegaconf import OmegaConf

    if _RESOLVER.search(json.dumps(OmegaConf.to_container(task_cfg, resolve=False))):
        return None
    raw_hydra = OmegaConf.to_container(hc, resolve=False)
    if any("${" in json.dumps(v, default=str) for k, v in raw_hydra.items() if k not in _UNUSED_IN_RUN):
        return None  # searchpath, job.name, output_subdir...: resolved once, they would be frozen in the memo
    if hc.verbose or hc.job.chdir or hc.job.env_set or str(hc.mode) not in ("None", "RunMode.RUN"):
        return None
    callbacks = raw_hydra.get("callbacks") or {}
    if {k: (v or {}).get("_target_") for k, v in callbacks.items()} != _CALLBACKS or \
            any(set(v) != {"_target_"} for v in callbacks.values()):
        return None
    out_abs = str(out)
    if not _PLAIN_PATH.fullmatch(out_abs) or out_abs != hc.runtime.output_dir:
        return None
    run_dir = _run_dir_parts(raw_hydra["run"]["dir"], task_cfg, hc)
    if run_dir is None or not _matches(run_dir, out_abs):
        return None
    logging = {name: _logging(hc, raw_hydra.get(name), name, out_abs) for name in _LOG_REFS}
    if any(v is False for v in logging.values()):
        return None
    files: dict[str, str] = {}
    if hc.output_subdir is not None:
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            files[name] = (out / hc.output_subdir / name).read_text(encoding="utf-8")
        line = f"output_dir: {out_abs}\n"
        if files["hydra.yaml"].count(line) != 1 or files["hydra.yaml"].count(out_abs) != 1:
            return None
        files["hydra.yaml"] = files["hydra.yaml"].replace(line, f"output_dir: {OUT_TOKEN}\n")
    return Composed(recipe=recipe, user_dir=user_dir, config_name=hc.job.config_name,
                    choices=dict(hc.runtime.choices), task_overrides=list(hc.overrides.task), run_dir=run_dir,
                    output_subdir=hc.output_subdir, hydra_files=files, hydra_logging=logging["hydra_logging"],
                    job_logging=logging["job_logging"])


def _run_dir_parts(pattern: str, task_cfg: Any, hc: Any) -> list[Any] | None:
    """``hydra.run.dir`` as literal parts and ``now`` formats; None if it uses anything else."""
    from omegaconf import OmegaConf

    def ref(m: re.Match) -> str:
        path = m.group(1)
        node = OmegaConf.select(hc, path[len("hydra."):]) if path.startswith("hydra.") else \
            OmegaConf.select(task_cfg, path)
        if node is None or isinstance(node, (dict, list)) or OmegaConf.is_config(node) or "${" in str(node):
            raise ValueError(path)
        return str(node)

    if "\\" in pattern:
        return None
    parts: list[Any] = []
    pos = 0
    for m in _NOW.finditer(pattern):
        parts.append(_REF.sub(ref, pattern[pos:m.start()]))
        parts.append({"now": m.group(1)})
        pos = m.end()
    parts.append(_REF.sub(ref, pattern[pos:]))
    if any(isinstance(p, str) and "${" in p for p in parts):
        return None
    return [p for p in parts if p != ""]


def _matches(parts: list[Any], out_abs: str) -> bool:
    """Whether the parts, made absolute as Hydra makes them, can give ``out_abs`` (a check of the parsing)."""
    pattern = "".join(re.escape(p) if isinstance(p, str) else "[^/]+" for p in parts)
    if not (parts and isinstance(parts[0], str) and parts[0].startswith("/")):
        pattern = re.escape(os.path.join(os.getcwd(), "")) + pattern
    return re.fullmatch(pattern, out_abs) is not None


def _logging(hc: Any, raw: Any, name: str, out_abs: str) -> dict[str, Any] | None | bool:
    """The resolved logging config with the output folder as a token; None when Hydra configures none (or a
    root-less one, which Hydra skips); False when plain ``logging.config`` would not do exactly what Hydra's does
    (Hydra's own configurator adds only checks of what a config may instantiate)."""
    from omegaconf import OmegaConf

    if raw is None:
        return None
    if not set(_INTERPOLATION.findall(json.dumps(raw))) <= _LOG_REFS[name]:
        return False
    conf = OmegaConf.to_container(hc.get(name), resolve=True)
    if conf.get("root") is None:
        return None
    # Loggers that exist differ between the two paths (Hydra imports more): only a config that disables none.
    if conf.get("disable_existing_loggers", True) is not False or conf.get("filters") or conf.get("incremental"):
        return False
    text = json.dumps(conf)
    if "()" in text or OUT_TOKEN in text:
        return False
    for h in (conf.get("handlers") or {}).values():
        if h.get("class") not in _LOG_HANDLERS or h.get("stream") not in _LOG_STREAMS:
            return False
    for f in (conf.get("formatters") or {}).values():
        if set(f) - {"format", "datefmt", "style"}:
            return False
    return json.loads(text.replace(out_abs, OUT_TOKEN))


def start_run(c: Composed) -> Path:
    """Do what Hydra's run does before calling the task: claim the run folder, configure logging, write
    ``.hydra/``. Returns the output folder (absolute). ``ValueError`` (nothing written) when its path is not one
    the memo can write Hydra's bytes for: the caller then runs Hydra."""
    import datetime

    from ..builds.rundir import abandon, claim

    now = datetime.datetime.now()
    run_dir = "".join(p if isinstance(p, str) else now.strftime(p["now"]) for p in c.run_dir)
    out = os.path.abspath(run_dir)
    if not _PLAIN_PATH.fullmatch(out) or OUT_TOKEN in out:
        raise ValueError(out)
    claim(run_dir)  # as RunDirClaim.on_run_start: before anything is written there
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        _configure_logging(c.hydra_logging, out)
        _configure_logging(c.job_logging, out)
        if c.output_subdir is not None:
            d = Path(out) / c.output_subdir
            d.mkdir(parents=True, exist_ok=True)
            for name, text in c.hydra_files.items():
                (d / name).write_text(text.replace(OUT_TOKEN, out), encoding="utf-8")
    except BaseException:
        abandon(out)  # nothing of this run is left behind
        raise
    return Path(out)


def _configure_logging(conf: dict[str, Any] | None, out: str) -> None:
    if conf is None:
        return
    import logging.config

    logging.config.dictConfig(json.loads(json.dumps(conf).replace(OUT_TOKEN, json.dumps(out)[1:-1])))
