"""The registry of section kinds: each kind module registers its section class under its group.

Kind modules are discovered from the group packages (``qcompile.kinds.model``...) the way step modules are from
``qcompile.steps`` (``qcompile.discover``), so adding a kind is adding a module there (and a recipe group file);
nothing else lists them.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from ..discover import import_modules
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
        import_modules(f"{__package__}.{_PACKAGES[group]}")
    _loaded = True


def kinds(group: str) -> dict[str, type[Kind]]:
    """Kind name -> section class for ``group``, in name order."""
    load_all()
    return dict(sorted(_KINDS[group].items()))
