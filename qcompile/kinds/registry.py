"""The registry of section kinds: each kind module registers its section class under its group.

Kind modules are discovered from the group packages (``qcompile.kinds.model``...), so adding a kind is adding a
module there (and a recipe group file); nothing else lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

from .section import Kind

GROUPS = ("data", "model", "quant", "target")
# The package holding each group's kinds ("targets", not "target": tools treat folders named target/ as output).
_PACKAGES = {"data": "data", "model": "model", "quant": "quant", "target": "targets"}
K = TypeVar("K", bound=type[Kind])
_KINDS: dict[str, dict[str, type[Kind]]] = {g: {} for g in GROUPS}
_loaded = False


def register(group: str) -> Callable[[K], K]:
    """Class decorator: add a section kind to ``group`` under its ``kind`` literal."""

    def add(cls: K) -> K:
        from typing import get_args

        (name,) = get_args(cls.model_fields["kind"].annotation)
        if name in _KINDS[group] and _KINDS[group][name] is not cls:
            raise RuntimeError(f"{group}.kind={name} registered twice")
        cls.group = group
        _KINDS[group][name] = cls
        return cls

    return add


def load_all() -> None:
    """Import every kind module of every group (cheap: kinds import no ML library at module level)."""
    global _loaded
    if _loaded:
        return
    for group in GROUPS:
        pkg = importlib.import_module(f"{__package__}.{_PACKAGES[group]}")
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg.__name__}.{info.name}")
    _loaded = True


def kinds(group: str) -> dict[str, type[Kind]]:
    """Kind name -> section class for ``group``, in name order."""
    load_all()
    return dict(sorted(_KINDS[group].items()))
