"""A memo of Hydra's composition, so a rebuild of an unchanged recipe skips Hydra (about half its time).

A fully cached ``qcompile build`` spends most of its time in Hydra: importing it, composing the recipe and
Hydra's own config (dozens of YAML files merged), writing ``.hydra/``. The composition is a function of the
command line, the working directory, the config files on Hydra's search path, and the code of Hydra, OmegaConf,
PyYAML, their plugins and qcompile. After a plain run composes, :func:`record` stores the composed recipe with
what it was composed from (``sources``: recipe folders by content, code by stat stamp) and what Hydra did around
the task (``hydra_run``: run folder pattern, logging, the ``.hydra/`` files).

:func:`lookup` trusts a memo only while all of that is unchanged: an edited, added or removed recipe file (also
behind a symlink), an upgraded package, a package or ``.pth`` file appearing on ``sys.path`` under a name that
could shadow one, each sends the build through Hydra again, which records a new memo. The task itself runs as
after Hydra, so relative recipe paths and ``~key`` deletions are resolved again on every build.

A memo is never recorded when it could be wrong or incomplete:
- the recipe folders known from the command line are read *before* Hydra composes, so an edit racing the
  composition leaves a memo that no longer matches (a miss, never a stale hit); code and ``hydra.searchpath``
  folders read after composing must not have changed within ``RACY_SECONDS`` of the build's start;
- a config file calls a resolver (``${oc.env:...}`` in a defaults list or a search path, ``${now:...}`` or
  ``${hydra:...}`` outside Hydra's run folder pattern): its value depends on more than the files;
- composing raised a warning (a memo would not repeat it, nor honour settings that make it an error);
- the Hydra config asks for anything ``hydra_run`` does not reproduce exactly (other callbacks, ``chdir``,
  ``env_set``, verbose or non-standard logging, a run folder pattern with resolvers other than ``now``);
- the command line has anything besides ``key=value`` overrides, ``--config-dir`` and ``--config-name``.
``QCOMPILE_COMPOSE_MEMO=0`` turns memos off.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..cache import default_cache_dir
from ..cache.keys import RACY_SECONDS, digest_json
from .hydra_run import Composed, describe, start_run
from .sources import code_roots, code_stamps, config_tree, recent_change, shadows, stamps_unchanged

__all__ = ["Composed", "Probe", "lookup", "probe", "prune", "record", "start_run"]

FORMAT = 3
OFF_ENV = "QCOMPILE_COMPOSE_MEMO"
_VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn"}


@dataclass
class Probe:
    """What is known before Hydra composes: the memo key, the build's start, and the recipe folders named by the
    command line (the packaged recipes, ``--config-dir``) as they were then."""

    key: str
    started: float
    trees: dict[str, Any]


def probe(argv: list[str], deletions: list[str], started: float) -> Probe | None:
    """The probe of a ``qcompile build`` command line, or None when a memo may not stand for it."""
    if os.environ.get(OFF_ENV, "1") == "0":
        return None
    roots = _packaged_recipes()
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if argv[i] in _VALUE_FLAGS or (eq and flag in ("--config-dir", "--config-name")):
            if not eq:
                if i + 1 == len(argv):
                    return None  # a flag without its value: Hydra says so
                i += 1
                value = argv[i]
            if flag in ("--config-dir", "-cd"):
                roots.append(os.path.abspath(value))
        elif flag.startswith("-"):
            return None  # -m, --help, --cfg, --info, --config-path...: Hydra's
        i += 1
    trees = {}
    for root in roots:
        trees[root] = config_tree(root)
        if trees[root] is None:
            return None
    key = digest_json({"format": FORMAT, "argv": argv, "deletions": deletions, "cwd": os.getcwd(),
                       "executable": sys.executable, "path": sys.path})
    return Probe(key, started, trees)


def _packaged_recipes() -> list[str]:
    import importlib.util

    from ..recipe.load import RECIPES_MODULE

    spec = importlib.util.find_spec(RECIPES_MODULE)
    return [os.path.abspath(p) for p in (spec.submodule_search_locations or [])] if spec else []


def _path(key: str) -> Path:
    return default_cache_dir() / "compose" / f"{key}.json"


def lookup(p: Probe) -> Composed | None:
    """The memo of the probe's key when everything it was composed from is unchanged, else None."""
    path = _path(p.key)
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT or raw.get("key") != p.key or shadows() != raw["shadows"]:
            return None
        for root, tree in raw["trees"].items():
            if (p.trees[root] if root in p.trees else config_tree(root)) != tree:
                return None
        if not stamps_unchanged(raw["stamps"]):
            return None
        composed = Composed(**raw["composed"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    try:
        os.utime(path)  # last used: what `cache gc --older-than` goes by
    except OSError:
        pass
    return composed


def record(p: Probe, task_cfg: Any, hc: Any, out: Path, recipe: dict[str, Any], user_dir: str | None) -> bool:
    """Store the memo of a plain run Hydra just composed (``hc`` its Hydra config, ``out`` the run folder it
    made); False, storing nothing, when the run is not one a memo can reproduce exactly."""
    try:
        composed = describe(task_cfg, hc, out, recipe, user_dir)
        if composed is None:
            return False
        body = _inputs(p, hc)
    except Exception:  # a memo is an optimisation: whatever stops it, the build goes on through Hydra
        return False
    if body is None:
        return False
    body = {"format": FORMAT, "key": p.key, **body, "composed": asdict(composed)}
    if json.loads(json.dumps(body)) != body:
        return False  # a value JSON cannot carry as it is (a non-string key): not worth a special case
    dest = _path(p.key)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, dest)
    except OSError:
        return False
    return True


def _inputs(p: Probe, hc: Any) -> dict[str, Any] | None:
    """The recipe folders, code stamps and sys.path entries this composition read; None if one cannot be
    trusted (changed too recently, too big, a resolver in a config file)."""
    import importlib.util

    code = code_roots()
    trees = dict(p.trees)
    for source in hc.runtime.config_sources:
        if source.schema == "structured":
            continue  # ConfigStore entries are code
        if source.schema == "file":
            roots = [os.path.abspath(source.path)]
        elif source.schema == "pkg":
            spec = importlib.util.find_spec(source.path)
            if spec is None or not spec.submodule_search_locations:
                return None
            roots = [os.path.abspath(r) for r in spec.submodule_search_locations]
        else:
            return None
        for root in roots:
            if root in trees:
                continue
            tree = config_tree(root)  # Hydra's own configs too: they may shadow or add group options
            if tree is None or recent_change(tree, p.started):
                return None
            trees[root] = tree
    if any(t["resolvers"] for t in trees.values()):
        return None
    stamps = code_stamps(code)
    if any(isinstance(s, list) and s[2] / 1e9 >= p.started - RACY_SECONDS for _, s in stamps):
        return None
    return {"trees": trees, "stamps": stamps, "shadows": shadows()}


def prune(older_than_days: float, dry_run: bool = False, cache_dir: Path | None = None) -> int:
    """Remove memos unused for ``older_than_days`` (a pruned memo costs one composition), and scratch files of
    interrupted writes; returns how many memos."""
    d = (cache_dir or default_cache_dir()) / "compose"
    cutoff = time.time() - older_than_days * 86400
    n = 0
    for p in d.iterdir() if d.is_dir() else ():
        try:
            scratch = p.name.endswith(".tmp") and p.stat().st_mtime < time.time() - 3600
            if scratch or (p.suffix == ".json" and p.stat().st_mtime < cutoff):
                n += not scratch
                if not dry_run:
                    p.unlink()
        except FileNotFoundError:
            continue
    return n
