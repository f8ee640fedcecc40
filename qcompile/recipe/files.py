"""A user's recipe files: naming the broken one a composition read, and resolving the relative paths they hold.

Only what the composition reads is judged: a broken draft lying in the same folder does not block a valid recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import BadInput


def check_file(path: Path) -> BadInput | None:
    """Why the recipe file ``path`` cannot be composed (not UTF-8, invalid YAML, not a mapping), or None."""
    import yaml

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        return BadInput(f"{path}: not UTF-8 text (byte {e.start}); save the recipe as UTF-8")
    except OSError as e:
        return BadInput(f"{path}: cannot be read ({e.strerror})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return BadInput(f"{path}: invalid YAML{where}: {problem}")
    if data is not None and not isinstance(data, dict):
        return BadInput(f"{path}: a recipe file must be a mapping of keys, not a {type(data).__name__}")
    return None


def diagnose(folder: Path, error: BaseException, config_name: str) -> BadInput | None:
    """The broken file of ``folder`` behind a composition ``error``: the one the error names; for an error that
    names no file (a decoding error, a file that is not a mapping), the recipe itself, else a broken file the
    error's text mentions by name, else the first broken file."""
    import re

    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None and getattr(mark, "name", None):
        return check_file(Path(mark.name))
    text = str(error)
    # An error that names no file: only a file with that very problem can be behind it.
    problem = ("not UTF-8" if isinstance(error, UnicodeDecodeError)
               else "must be a mapping" if "Invalid loaded object type" in text else None)
    paths = sorted(folder.rglob("*.yaml"), key=lambda p: p != folder / f"{config_name}.yaml")
    for path in paths:
        rel = path.relative_to(folder).with_suffix("").as_posix()
        if problem or re.search(rf"\b{re.escape(rel)}\b", text):
            found = check_file(path)
            if found is not None and (problem is None or problem in str(found)):
                return found
    return None


# Recipe keys that hold the user's files or folders.
PATH_KEYS = {"model": ("path", "weights", "root"),
             "data": ("path", "labels", "texts", "scores", "pairs", "calibration")}


def _set_in(path: Path, group: str, key: str, nested: bool) -> bool:
    """Whether the YAML file ``path`` sets ``key`` (under ``group:`` when ``nested``, at the top for a group file)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    if nested:
        data = data.get(group) if isinstance(data, dict) else None
    return isinstance(data, dict) and key in data


def resolve_relative_paths(data: dict[str, Any], config_dir: str | Path | None, config_name: str,
                           choices: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Resolve relative file paths written in the user's recipe files against that file's folder (as DVC resolves
    paths in dvc.yaml), leaving those given on the command line to resolve against the working directory.

    The recipe's own file wins over its group files (Hydra composes ``_self_`` last); a value that is no existing
    path there (``IMAGENET1K_V1``, ``folders``) is left as it is.
    """
    if config_dir is None:
        return data
    root = Path(config_dir).resolve()
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    primary = root / f"{config_name}.yaml"
    for group, keys in PATH_KEYS.items():
        section = data.get(group)
        if not isinstance(section, dict):
            continue
        option = choices.get(group)
        group_file = root / group / f"{option}.yaml" if option else None
        for key in keys:
            value = section.get(key)
            if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute() \
                    or f"{group}.{key}" in given:
                continue
            if primary.is_file() and _set_in(primary, group, key, nested=True):
                base = primary.parent
            elif group_file is not None and group_file.is_file() and _set_in(group_file, group, key, nested=False):
                base = group_file.parent
            else:
                continue  # a packaged recipe's value: relative to the working directory
            if (base / value).exists():
                section[key] = str((base / value).resolve())
    return data
