"""How kinds and steps are found: every module of a package is imported, and importing a module registers what it
defines (``@register``). Adding a kind or a step is adding a module; nothing lists them."""

from __future__ import annotations

import importlib
import pkgutil


def import_modules(package: str) -> list[str]:
    """Import every module of ``package`` (not sub-packages' modules) whose name does not start with ``_``, in name
    order; return their names. Modules named ``_x`` hold what several modules share and register nothing."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
