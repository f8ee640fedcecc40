"""A model made by the user's own code: ``package.module:function`` called with keyword arguments, returning an
``nn.Module`` (optionally loaded with a state_dict file). The step's key holds the module file's content, so
editing the model code rebuilds and an unchanged file stays cached."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .base import Step, StepContext, StepParams, register


def call_factory(arch: dict[str, Any]):
    """The ``nn.Module`` the factory ``arch["function"]`` returns; bad input when it does not import, is not
    callable, raises, or returns something else."""
    import importlib

    import torch

    module_name, _, fn_name = arch["function"].partition(":")
    key = "model.function"
    root = str(arch["root"])
    sys.path.insert(0, root)
    try:
        importlib.invalidate_caches()
        if module_name in sys.modules:
            module = importlib.reload(sys.modules[module_name])  # the file may have changed in this process
        else:
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
    try:
        model = fn(**arch.get("kwargs", {}))
    except Exception as e:  # the user's function
        raise BadInput(f"{arch['function']}(**model.kwargs) raised {type(e).__name__}: {str(e)[:200]}",
                       key=key) from None
    if not isinstance(model, torch.nn.Module):
        raise BadInput(f"{arch['function']} returned {type(model).__name__}, not a torch.nn.Module", key=key)
    return model


class FactoryParams(StepParams):
    arch: dict[str, Any]  # family "factory", function, kwargs, root, source_sha256
    source: Path  # the module file: its content digest joins the key
    weights: Path | None = None


@register
class FactoryModel(Step):
    """The user's model function, called once; its weights (or the state_dict file given) become the model's."""

    kind = "model.factory"
    Params = FactoryParams
    outputs = {"weights": "weights.pt"}
    libraries = ("torch",)
    file_fields = ("source", "weights")

    def preflight(self, p: FactoryParams) -> None:
        self._model(p)

    def _model(self, p: FactoryParams):
        import torch

        from .model import load_into, read_state_dict

        torch.manual_seed(0)  # a factory that initialises randomly gives the same weights on a rebuild
        model = call_factory(p.arch)
        if p.weights is not None:
            load_into(model, read_state_dict(p.weights), p.arch["function"])
        return model.eval()

    def run(self, ctx: StepContext, p: FactoryParams) -> dict[str, Any]:
        from .model import save_state_dict

        model = self._model(p)
        save_state_dict(model, ctx.out("weights"))
        return {"parameters": sum(t.numel() for t in model.parameters()), "class": type(model).__name__}
