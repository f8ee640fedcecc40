"""The ``model.factory`` step: the module the user's own code returns (``package.module:function`` with keyword
arguments, optionally loaded with a state_dict file), stored whole. The step's key holds the module file's
content, so editing the model code rebuilds and an unchanged file stays cached."""

from __future__ import annotations

import pickle
from typing import Any

from ..errors import BadInput
from ..kinds.model.factory import FactoryParams
from ..models import build, save_module
from .base import Step, StepContext, register
from .model import load_into, read_state_dict


@register
class FactoryModelStep(Step):
    """The user's model function, called once; its weights (or the state_dict file given) become the model's."""

    kind = "model.factory"
    # 2: the whole module stored (the export step loads it); params hold the model section; 3: weights holding NaN
    # or infinity refused
    version = 3
    Params = FactoryParams
    outputs = {"module": "model.pt"}
    libraries = ("torch",)
    file_fields = ("source", "model.weights")
    # The function, its kwargs and root are the architecture's; the rest shapes the contract and the export.
    unkeyed = ("model.function", "model.kwargs", "model.root", "model.input_shape", "model.num_classes",
               "model.labels", "model.normalize", "model.preprocess", "model.export")

    def preflight(self, p: FactoryParams) -> None:
        self._model(p)

    def _model(self, p: FactoryParams):
        import torch

        torch.manual_seed(0)  # a factory that initialises randomly gives the same weights on a rebuild
        model = build(p.arch)
        if p.model.weights is not None:
            load_into(model, read_state_dict(p.model.weights), p.arch.function)
        return model.eval()

    def run(self, ctx: StepContext, p: FactoryParams) -> dict[str, Any]:
        model = self._model(p)
        try:
            save_module(model, ctx.out("module"))
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # what pickle raises for what it cannot store
            raise BadInput(f"the module {p.arch.function} returned cannot be stored for the export step ({e}); "
                           "define its classes at the top level of a module, not inside the function",
                           key="model.function") from None
        return {"parameters": sum(t.numel() for t in model.parameters()), "class": type(model).__name__}
