"""Where a lockfile's paths point, written so that a project moved or cloned elsewhere still reproduces.

A path inside the project is recorded as ``root://<path under the root>``, and the lockfile names its root relative
to its own folder (as DVC records paths relative to the repository); a file inside an installed package outside the
project as ``pkg://<package>/<path>``; anything else stays absolute. Every user file a step reads is also recorded
with its content digest, so a missing or changed one can be named.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import BadInput
from ..kinds.section import PACKAGE_SCHEME, package_path

ROOT_SCHEME = "root://"
# Installed packages live here; a virtual environment inside the project is still not the project's own files.
_SITE_FOLDERS = {"site-packages", "dist-packages"}


def project_root(recipe_dir: str | Path | None = None) -> Path:
    """The project's folder: the working directory, widened to hold the recipe folder too.

    A common parent that is the filesystem's root names no project: then the working directory alone is.
    """
    cwd = Path.cwd().resolve()
    if recipe_dir is None:
        return cwd
    common = Path(os.path.commonpath([cwd, Path(recipe_dir).resolve()]))
    return cwd if common == Path(common.anchor) else common


def walk_strings(obj: Any, fn: Callable[[str], str]) -> Any:
    """``obj`` (plain JSON) with ``fn`` applied to every string in it."""
    if isinstance(obj, dict):
        return {k: walk_strings(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [walk_strings(v, fn) for v in obj]
    return fn(obj) if isinstance(obj, str) else obj


def recorded_paths(obj: Any) -> Iterator[str]:
    """Every ``root://`` path in ``obj`` (plain JSON), in order."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from recorded_paths(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from recorded_paths(v)
    elif isinstance(obj, str) and obj.startswith(ROOT_SCHEME):
        yield obj


@functools.lru_cache(maxsize=None)
def _installed(folder: Path) -> bool:
    """Whether ``folder`` is where the top-level package of its name is imported from (found without importing)."""
    try:
        spec = importlib.util.find_spec(folder.name)
    except (ImportError, ValueError):
        return False
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    return any(Path(loc).resolve() == folder for loc in locations)


@functools.lru_cache(maxsize=4096)
def _top_package(folder: Path) -> Path | None:
    """The installed top-level package folder ``folder`` lies in, or None."""
    for a in (*reversed(folder.parents), folder):
        if a.name.isidentifier() and (a / "__init__.py").is_file() and _installed(a):
            return a
    return None


class Recorder:
    """Writes the absolute paths of one build in the lockfile's portable form (``root``: the project's folder)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def path(self, value: str) -> str:
        """The portable form of ``value``; a string that is no existing absolute path is left as it is."""
        if not os.path.isabs(value) or not os.path.exists(value):
            return value
        p = Path(os.path.abspath(value))
        inside = p.is_relative_to(self.root)
        if not inside or _SITE_FOLDERS & set(p.parts):
            top = _top_package(p if p.is_dir() else p.parent)
            if top is not None:
                return f"{PACKAGE_SCHEME}{top.name}/{p.relative_to(top).as_posix()}"
        return f"{ROOT_SCHEME}{p.relative_to(self.root).as_posix()}" if inside else value

    def portable(self, obj: Any) -> Any:
        """``obj`` (plain JSON) with every path in portable form."""
        return walk_strings(obj, self.path)

    def root_from(self, lock_dir: Path) -> str:
        """The root as the lockfile in ``lock_dir`` names it: relative to that folder."""
        return Path(os.path.relpath(self.root, Path(lock_dir).resolve())).as_posix()


class Locator:
    """Finds a lockfile's recorded paths on this machine.

    ``roots`` are ``qcompile reproduce --root`` values: a folder is the project's root here (instead of the one the
    lockfile names relative to itself); ``OLD=NEW`` looks up files recorded outside the project under ``OLD`` in
    ``NEW``.
    """

    def __init__(self, lock_path: Path, recorded_root: str, roots: Sequence[str] = ()):
        self.lock_path = Path(lock_path)
        self.recorded_root = recorded_root
        self.root = Path(os.path.normpath(self.lock_path.resolve().parent / recorded_root))
        self.root_given = False
        self.maps: list[tuple[Path, Path]] = []
        for value in roots:
            old, eq, new = value.partition("=")
            folder = Path(new if eq else old).expanduser().resolve()
            if not folder.is_dir():
                raise BadInput(f"{folder} is not a folder", key="--root")
            if eq:
                self.maps.append((Path(old), folder))
            else:
                self.root, self.root_given = folder, True

    def path(self, value: str) -> str:
        """Where the recorded ``value`` is here (a string that is no recorded path is left as it is)."""
        if value.startswith(ROOT_SCHEME):
            return os.path.normpath(self.root / value[len(ROOT_SCHEME):])
        if value.startswith(PACKAGE_SCHEME):
            try:
                return package_path(value)
            except ValueError as e:
                raise BadInput(f"{self.lock_path} names {value}: {e}") from None
        if os.path.isabs(value):
            for old, new in self.maps:
                if Path(value).is_relative_to(old):
                    return str(new / Path(value).relative_to(old))
        return value

    def local(self, obj: Any) -> Any:
        """``obj`` (plain JSON from a lockfile) with every recorded path as it is on this machine."""
        return walk_strings(obj, self.path)

    def check(self, files: dict[str, str], elsewhere: Sequence[str] = ()) -> None:
        """Bad input naming the first of the recorded ``files`` (path -> digest) or ``elsewhere`` paths (the
        project's folders) that is not on this machine, and how to point qcompile at it."""
        for recorded in (*files, *elsewhere):
            here = self.path(recorded)
            if os.path.exists(here):
                continue
            if recorded.startswith(ROOT_SCHEME):
                where = (f"--root {self.root}" if self.root_given else
                         f"{self.recorded_root!r} relative to the lockfile, here {self.root}")
                raise BadInput(f"{self.lock_path}: the project root ({where}) has no "
                               f"{recorded[len(ROOT_SCHEME):]} (the first missing file): pass --root <the project's "
                               "folder here>")
            if recorded.startswith(PACKAGE_SCHEME):
                raise BadInput(f"{recorded} is not in the package installed here ({here}): another version of it?")
            digest = files.get(recorded, "")
            known = f", {digest[:19]}" if digest else ""
            raise BadInput(f"{here} is not on this machine (a file outside the project{known}); pass "
                           f"--root {Path(recorded).parent}=<the folder holding it here>")
