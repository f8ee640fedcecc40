"""What a composition read, in a form that can be compared later: recipe folders by content, code by stat stamp.

Recipe folders (the user's ``--config-dir``, the packaged recipes, ``hydra.searchpath`` additions) are small, so
they are compared by content: every ``.yaml``/``.yml`` file's sha256 and every folder's listing, following
symlinks as Hydra does. Content does not depend on clocks, timestamp granularity or a network filesystem's
attribute cache. Code (qcompile, Hydra, OmegaConf, PyYAML, antlr4, Hydra's plugins) is compared by the stat
stamp (size, mtime, ctime, inode, device) of every file and the listing of every folder: hashing it all would cost
more than composing.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..cache.keys import RACY_SECONDS, stamp_of, stat_stamp

CODE_PACKAGES = ("qcompile", "hydra", "omegaconf", "yaml", "antlr4", "hydra_plugins")
MAX_ENTRIES = 2000  # a recipe folder bigger than this (a whole project passed as --config-dir) gets no memo
_YAML = (".yaml", ".yml")
# A resolver call in a config file: ${name:...}. Only Hydra's own run-folder ones are allowed anywhere in a
# recipe file; any other (oc.env in a defaults list or in hydra.searchpath...) makes the composition depend on
# more than the files.
_RESOLVER = re.compile(r"\$\{\s*([\w.]+)\s*:([^}]*)\}")
# What could be imported as one of the code packages (a folder, a module, an extension) or add a path.
_SHADOW = re.compile(r"(qcompile|hydra|omegaconf|_?yaml|antlr4|hydra_plugins)(\.[^.]+)*$|.*\.pth$|__editable__.*")


def _allowed(m: re.Match) -> bool:
    return m.group(1) == "now" or (m.group(1) == "hydra" and m.group(2).strip() == "job.num")


def config_tree(root: str) -> dict[str, Any] | None:
    """The content of a recipe folder: {"dirs": {folder: listing}, "files": {path: sha256}, "resolvers": bool};
    a missing folder is recorded as such. None when it is too big or cannot be read."""
    dirs: dict[str, list[str] | None] = {}
    files: dict[str, str] = {}
    resolvers = False
    visited: set[str] = set()
    stack = [root]
    count = 0
    while stack:
        d = stack.pop()
        visited.add(os.path.realpath(d))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except FileNotFoundError:
            dirs[d] = None
            continue
        except OSError:
            return None
        names = []
        for e in entries:
            count += 1
            if count > MAX_ENTRIES:
                return None
            try:
                if e.is_dir():  # follows symlinks, as Hydra does
                    if e.name != "__pycache__":
                        names.append(e.name + "/")
                        if os.path.realpath(e.path) not in visited:  # a link back up is listed, not walked
                            stack.append(e.path)
                elif e.name.endswith(_YAML):
                    data = Path(e.path).read_bytes()
                    names.append(e.name)
                    files[e.path] = hashlib.sha256(data).hexdigest()
                    text = data.decode("utf-8", "replace")
                    resolvers = resolvers or any(not _allowed(m) for m in _RESOLVER.finditer(text))
            except OSError:
                return None
        dirs[d] = names
    return {"dirs": dirs, "files": files, "resolvers": resolvers}


def recent_change(tree: dict[str, Any], started: float) -> bool:
    """Whether any file or folder of ``tree`` changed within the racy window before ``started``."""
    for p in [*tree["dirs"], *tree["files"]]:
        s = stat_stamp(Path(p))
        if s is not None and s[2] / 1e9 >= started - RACY_SECONDS:
            return True
    return False


def code_roots() -> list[str]:
    """The folders of the code packages (found without importing them)."""
    import importlib.util

    roots: list[str] = []
    for name in CODE_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None:
            roots.extend(spec.submodule_search_locations or [os.path.dirname(spec.origin or "")])
    return [os.path.abspath(r) for r in roots if r]


def code_stamps(roots: list[str]) -> list[list[Any]]:
    """[path, stamp] of every file under ``roots`` and of the path hooks in ``sys.path`` folders (``.pth`` files,
    editable-install finders); [path, {"names": listing}] of every folder, bytecode caches left out (so Python
    writing a package's first ``__pycache__`` changes nothing)."""
    seen: dict[str, Any] = {}
    for d, names in shadows().items():
        for n in names:
            if n.endswith(".pth") or n.startswith("__editable__"):
                seen[os.path.join(d, n)] = stat_stamp(Path(d, n))
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files = sorted(f for f in filenames if not f.endswith((".pyc", ".pyo")))
            seen[dirpath] = {"names": sorted(dirnames + files)}
            for f in files:
                p = os.path.join(dirpath, f)
                seen[p] = stat_stamp(Path(p))
    return [[p, s] for p, s in seen.items()]


def stamps_unchanged(stamps: list[list[Any]]) -> bool:
    """Whether every recorded stamp or folder listing is still what it was (a missing path still missing)."""
    for path, stamp in stamps:
        if isinstance(stamp, dict):
            try:
                names = os.listdir(path)
            except OSError:
                return False
            if sorted(n for n in names if n != "__pycache__" and not n.endswith((".pyc", ".pyo"))) != stamp["names"]:
                return False
            continue
        try:
            st = os.stat(path)
        except OSError:
            if stamp is not None:
                return False
            continue
        if stamp_of(st) != stamp:
            return False
    return True


def shadows() -> dict[str, list[str]]:
    """For each ``sys.path`` folder, its entries that could shadow a code package or add a path (``.pth``):
    a package installed, removed or dropped into the working directory changes them."""
    found = {}
    for entry in sys.path:
        d = os.path.abspath(entry or ".")
        try:
            names = os.listdir(d)
        except OSError:
            continue  # a zip or a missing folder
        found[d] = sorted(n for n in names if _SHADOW.match(n))
    return found

