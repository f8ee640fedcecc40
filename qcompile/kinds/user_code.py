"""Finding the user's own code (a model factory, a data factory, a metric) without running it: the module file a
``package.module:function`` imports from under a root folder. Its content digest keys what the function makes."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput


def module_file(root: Path, module: str) -> Path | None:
    """The file ``module`` (dotted) imports from under ``root``, found without running any of the user's code."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def function_source(function: str, root: Path, key: str, root_key: str) -> Path:
    """The module file of ``function`` (``package.module:function``) under ``root``; bad input naming ``key`` and
    the recipe key of the root (``root_key``) when there is none."""
    module = function.partition(":")[0]
    path = module_file(root, module)
    if path is None:
        raise BadInput(f"{function} does not import: no {module.replace('.', '/')}.py under {root} (set {root_key} "
                       "to the folder holding it)", key=key)
    return path
