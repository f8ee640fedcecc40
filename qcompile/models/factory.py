"""The user's model function: ``package.module:function`` imported from a folder and called with keyword arguments."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import BadInput
from .arch import FactoryArch


def import_function(function: str, root, key: str):
    """The callable ``package.module:function`` names, imported afresh from the folder ``root`` (so an edited file,
    or the file under this root rather than a namesake imported earlier, is what runs); bad input naming ``key``
    when it does not import or is not callable."""
    import importlib

    module_name, _, fn_name = function.partition(":")
    root = str(root)
    sys.path.insert(0, root)
    try:
        importlib.invalidate_caches()
        _forget(module_name.partition(".")[0], Path(root))
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: any error while importing it is theirs
        raise BadInput(f"{module_name} does not import from {root}: {type(e).__name__}: {str(e)[:200]}",
                       key=key) from None
    finally:
        if sys.path and sys.path[0] == root:
            sys.path.pop(0)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise BadInput(f"{module_name} has no callable {fn_name!r}", key=key)
    return fn


def call_factory(arch: FactoryArch):
    """The ``nn.Module`` the factory returns; bad input naming ``model.function`` when it does not import, is not
    callable, raises, or returns something else."""
    import torch

    key = "model.function"
    fn = import_function(arch.function, arch.root, key)
    try:
        model = fn(**arch.kwargs)
    except Exception as e:  # the user's function
        raise BadInput(f"{arch.function}(**model.kwargs) raised {type(e).__name__}: {str(e)[:200]}",
                       key=key) from None
    if not isinstance(model, torch.nn.Module):
        raise BadInput(f"{arch.function} returned {type(model).__name__}, not a torch.nn.Module", key=key)
    return model


def _forget(top: str, root: Path) -> None:
    """Drop the package ``top`` and its submodules from ``sys.modules`` when ``root`` holds that package: the files
    may have changed since this process imported them, or an earlier call imported a package of the same name from
    another folder (reloading only the leaf module would then find its siblings, even itself, in that folder)."""
    if not ((root / top).is_dir() or (root / f"{top}.py").is_file()):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        del sys.modules[name]
