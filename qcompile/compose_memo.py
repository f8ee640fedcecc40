"""A memo of Hydra's composition, so a rebuild of an unchanged recipe skips Hydra (about half its time).

A fully cached ``qcompile build`` spends most of its time in Hydra: importing it, composing the recipe and
Hydra's own config (dozens of YAML files merged), writing ``.hydra/``. The composition is a pure function of the
command line, the working directory, the config files on Hydra's search path, and the code of Hydra, OmegaConf,
PyYAML, their plugins and qcompile. After a plain run composes, :func:`record` stores the composed recipe with a
stat stamp (size, mtime, ctime, inode, device) of every one of those files and of their folders (a folder's stamp
changes when a file is added, removed or renamed in it), plus what Hydra did around the task: the run folder's
pattern, its logging configuration and the text of the three ``.hydra/`` files.

:func:`lookup` trusts a memo only while every stamp is unchanged; any difference (an edited, added or removed
recipe file, an upgraded package, a package or ``.pth`` file appearing on ``sys.path`` under a name that could
shadow one of those) sends the build through Hydra again, which records a new memo. :func:`start_run` then does
what Hydra's run would: claims the run folder, configures logging the same way and writes ``.hydra/`` byte for
byte as Hydra writes it; the task itself is unchanged, so relative recipe paths and ``~key`` deletions are
resolved again on every build.

A memo is never recorded when it could be wrong or incomplete:
- any file it stamps changed less than ``RACY_SECONDS`` before the build began (a later edit within the same
  timestamp tick would go unseen, and the composition may have read the file before that change);
- the recipe uses a resolver (``${oc.env:...}``, ``${now:...}``, ``${hydra:...}``): its value is not a function
  of the files alone;
- the Hydra config asks for anything :func:`start_run` does not reproduce exactly (other callbacks, ``chdir``,
  ``env_set``, verbose logging, logging handlers beyond the standard ones, a run folder pattern with resolvers
  other than ``now``);
- the command line has anything besides ``key=value`` overrides, ``--config-dir`` and ``--config-name``.
``QCOMPILE_COMPOSE_MEMO=0`` turns memos off.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cache import default_cache_dir
from .cache.keys import RACY_SECONDS, digest_json, stamp_of, stat_stamp

FORMAT = 1
OFF_ENV = "QCOMPILE_COMPOSE_MEMO"
_OUT_TOKEN = "/qcompile-compose-memo/output-dir"
# An output path Hydra's YAML writes as a plain scalar, so replacing the token gives Hydra's exact bytes.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./+-]*")
_RESOLVER = re.compile(r"\$\{[^}]*:")  # ${name:...}: a resolver call, not a plain ${a.b} reference
_NOW = re.compile(r"\$\{now:([^}]*)\}")
_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
_VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn"}
_CODE_PACKAGES = ("qcompile", "hydra", "omegaconf", "yaml", "antlr4", "hydra_plugins")
# What could be imported as one of those packages (a folder, a module, an extension) or add a path.
_SHADOW = re.compile(r"(qcompile|hydra|omegaconf|_?yaml|antlr4|hydra_plugins)(\.[^.]+)*$|.*\.pth$|__editable__.*")
_CALLBACKS = {"run_dir_claim": "qcompile.callbacks.RunDirClaim",
              "sweep_report": "qcompile.report.sweep.SweepReportCallback"}
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


def memo_key(argv: list[str], deletions: list[str]) -> str | None:
    """The memo key of a ``qcompile build`` command line, or None when it is not one a memo may stand for."""
    if os.environ.get(OFF_ENV, "1") == "0":
        return None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_FLAGS:
            i += 2
            continue
        if a.startswith("-") and a.split("=", 1)[0] not in {"--config-dir", "--config-name"}:
            return None  # -m, --help, --cfg, --info, --config-path...: Hydra's
        i += 1
    return digest_json({"format": FORMAT, "argv": argv, "deletions": deletions, "cwd": os.getcwd(),
                        "executable": sys.executable, "path": sys.path})


def _path(key: str) -> Path:
    return default_cache_dir() / "compose" / f"{key}.json"


def lookup(key: str) -> Composed | None:
    """The memo of ``key`` when every file it was composed from is unchanged, else None."""
    try:
        raw = json.loads(_path(key).read_text())
        if raw.get("format") != FORMAT or raw.get("key") != key:
            return None
        if _shadows() != raw["shadows"]:
            return None
        for path, stamp in raw["stamps"]:
            try:
                st = os.stat(path)
            except OSError:
                if stamp is not None:
                    return None
                continue
            if stamp_of(st) != stamp:
                return None
        return Composed(**raw["composed"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def record(key: str, started: float, task_cfg: Any, hc: Any, out: Path, recipe: dict[str, Any],
           user_dir: str | None) -> bool:
    """Store the memo of a plain run that Hydra just composed (``hc`` is its Hydra config, ``out`` the run folder
    Hydra made); False, storing nothing, when the run is not one a memo can reproduce exactly."""
    try:
        composed = _describe(task_cfg, hc, out, recipe, user_dir)
        stamps = _stamps(hc)
    except Exception:  # a memo is an optimisation: whatever stops it, the build goes on through Hydra
        return False
    if composed is None or stamps is None:
        return False
    if any(s is not None and s[2] / 1e9 >= started - RACY_SECONDS for _, s in stamps):
        return False
    body = {"format": FORMAT, "key": key, "stamps": stamps, "shadows": _shadows(), "composed": asdict(composed)}
    if json.loads(json.dumps(body)) != body:
        return False  # a value JSON cannot carry as it is (a non-string key): not worth a special case
    dest = _path(key)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, dest)
    except OSError:
        return False
    return True


def _describe(task_cfg: Any, hc: Any, out: Path, recipe: dict[str, Any], user_dir: str | None) -> Composed | None:
    from omegaconf import OmegaConf

    raw_task = OmegaConf.to_container(task_cfg, resolve=False)
    if _RESOLVER.search(json.dumps(raw_task)):
        return None
    if hc.verbose or hc.job.chdir or hc.job.env_set or str(hc.mode) not in ("None", "RunMode.RUN"):
        return None
    callbacks = OmegaConf.to_container(hc.callbacks, resolve=False) or {}
    if {k: (v or {}).get("_target_") for k, v in callbacks.items()} != _CALLBACKS or \
            any(set(v) != {"_target_"} for v in callbacks.values()):
        return None
    out_abs = str(out)
    if not _PLAIN_PATH.fullmatch(out_abs) or out_abs != hc.runtime.output_dir:
        return None
    run_dir = _run_dir_parts(OmegaConf.to_container(hc.run, resolve=False)["dir"], task_cfg, hc)
    if run_dir is None or not _matches(run_dir, out_abs):
        return None
    hydra_logging = _logging(hc, "hydra_logging", out_abs)
    job_logging = _logging(hc, "job_logging", out_abs)
    if hydra_logging is False or job_logging is False:
        return None
    files: dict[str, str] = {}
    if hc.output_subdir is not None:
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            files[name] = (out / hc.output_subdir / name).read_text(encoding="utf-8")
        line = f"output_dir: {out_abs}\n"
        if files["hydra.yaml"].count(line) != 1 or files["hydra.yaml"].count(out_abs) != 1:
            return None
        files["hydra.yaml"] = files["hydra.yaml"].replace(line, f"output_dir: {_OUT_TOKEN}\n")
    return Composed(recipe=recipe, user_dir=user_dir, config_name=hc.job.config_name,
                    choices=dict(hc.runtime.choices), task_overrides=list(hc.overrides.task), run_dir=run_dir,
                    output_subdir=hc.output_subdir, hydra_files=files, hydra_logging=hydra_logging or None,
                    job_logging=job_logging or None)


def _run_dir_parts(pattern: str, task_cfg: Any, hc: Any) -> list[Any] | None:
    """``hydra.run.dir`` as literal parts and ``now`` formats; None if it uses anything else."""
    from omegaconf import OmegaConf

    def ref(m: re.Match) -> str:
        path = m.group(1)
        node = OmegaConf.select(hc, path[len("hydra."):]) if path.startswith("hydra.") else \
            OmegaConf.select(task_cfg, path)
        if node is None or isinstance(node, (dict, list)) or OmegaConf.is_config(node):
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


def _logging(hc: Any, name: str, out_abs: str) -> dict[str, Any] | None | bool:
    """The resolved logging config with the output folder as a token; None when Hydra configures none (or a
    root-less one, which Hydra skips); False when plain ``logging.config`` would not do what Hydra's does."""
    from omegaconf import OmegaConf

    node = hc.get(name)
    if node is None:
        return None
    conf = OmegaConf.to_container(node, resolve=True)
    if conf.get("root") is None:
        return None
    text = json.dumps(conf)
    if "()" in text or "${" in text or _OUT_TOKEN in text:
        return False
    for h in (conf.get("handlers") or {}).values():
        if h.get("class") not in _LOG_HANDLERS or h.get("stream") not in _LOG_STREAMS:
            return False
    for f in (conf.get("formatters") or {}).values():
        if set(f) - {"format", "datefmt", "style"}:
            return False
    if conf.get("filters") or conf.get("incremental"):
        return False
    return json.loads(text.replace(out_abs, _OUT_TOKEN))


def _stamps(hc: Any) -> list[list[Any]] | None:
    """[path, stamp] of every file and folder the composition could have read, and of the path hooks in
    ``sys.path`` folders (``.pth`` files, editable-install finders)."""
    import importlib.util

    roots: list[str] = []
    for source in hc.runtime.config_sources:
        if source.schema == "file":
            roots.append(os.path.abspath(source.path))
        elif source.schema == "pkg":
            spec = importlib.util.find_spec(source.path)
            if spec is None or not spec.submodule_search_locations:
                return None
            roots.extend(spec.submodule_search_locations)
        elif source.schema != "structured":  # ConfigStore entries are code: stamped with the packages below
            return None
    for name in _CODE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None:
            roots.extend(spec.submodule_search_locations or [os.path.dirname(spec.origin or "")])
    seen: dict[str, Any] = {}
    for d, names in _shadows().items():
        for n in names:
            if n.endswith(".pth") or n.startswith("__editable__"):
                seen[os.path.join(d, n)] = stat_stamp(Path(d, n))
    for root in roots:
        seen[root] = stat_stamp(Path(root))
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            seen[dirpath] = stat_stamp(Path(dirpath))
            for f in sorted(filenames):
                if not f.endswith((".pyc", ".pyo")):
                    p = os.path.join(dirpath, f)
                    seen[p] = stat_stamp(Path(p))
    return [[p, s] for p, s in seen.items()]


def _shadows() -> dict[str, list[str]]:
    """For each ``sys.path`` folder, its entries that could shadow a stamped package or add a path (``.pth``):
    a package installed, removed or dropped into the working directory changes them."""
    found = {}
    for entry in sys.path:
        d = os.path.abspath(entry or ".")
        try:
            names = os.listdir(d)
        except OSError:
            continue  # a zip or a missing folder: nothing can appear in it unseen that a stamp would catch
        found[d] = sorted(n for n in names if _SHADOW.match(n))
    return found


def start_run(c: Composed) -> Path:
    """Do what Hydra's run does before calling the task, from a memo: claim the run folder, configure logging,
    write ``.hydra/``. Returns the output folder (absolute), or raises ``ValueError`` when its path is not one
    the memo can write Hydra's bytes for (the caller then runs Hydra)."""
    import datetime

    from .build.rundir import claim

    now = datetime.datetime.now()
    run_dir = "".join(p if isinstance(p, str) else now.strftime(p["now"]) for p in c.run_dir)
    out = os.path.abspath(run_dir)
    if not _PLAIN_PATH.fullmatch(out) or _OUT_TOKEN in out:
        raise ValueError(out)
    claim(run_dir)  # as RunDirClaim.on_run_start: before anything is written there
    Path(out).mkdir(parents=True, exist_ok=True)
    _configure_logging(c.hydra_logging, out)
    _configure_logging(c.job_logging, out)
    if c.output_subdir is not None:
        d = Path(out) / c.output_subdir
        d.mkdir(parents=True, exist_ok=True)
        for name, text in c.hydra_files.items():
            (d / name).write_text(text.replace(_OUT_TOKEN, out), encoding="utf-8")
    return Path(out)


def _configure_logging(conf: dict[str, Any] | None, out: str) -> None:
    if conf is None:
        return
    import logging.config

    logging.config.dictConfig(json.loads(json.dumps(conf).replace(_OUT_TOKEN, json.dumps(out)[1:-1])))


def prune(older_than_days: float, dry_run: bool = False, cache_dir: Path | None = None) -> int:
    """Remove memos not written for ``older_than_days`` (a pruned memo costs one composition); how many."""
    d = (cache_dir or default_cache_dir()) / "compose"
    cutoff = time.time() - older_than_days * 86400
    n = 0
    for p in d.glob("*.json") if d.is_dir() else ():
        try:
            if p.stat().st_mtime < cutoff:
                n += 1
                if not dry_run:
                    p.unlink()
        except FileNotFoundError:
            continue
    return n
