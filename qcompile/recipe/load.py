"""Loading a recipe: compose it (``compose``), then validate it with pydantic; every failure is a ``BadInput``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from ..errors import BadInput
from .compose import DEFAULT_RECIPE, RECIPES_MODULE, compose
from .errors import format_validation_error
from .schema import Recipe

__all__ = ["DEFAULT_RECIPE", "RECIPES_MODULE", "load_recipe", "validate"]


def validate(data: dict[str, Any]) -> Recipe:
    """A ``Recipe`` from a plain dict (Hydra's ``hydra`` node, if any, is ignored)."""
    data = {k: v for k, v in data.items() if k != "hydra"}
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise BadInput(format_validation_error(e, data)) from None


def load_recipe(config_name: str = DEFAULT_RECIPE, overrides: Sequence[str] = (),
                config_dir: str | Path | None = None) -> Recipe:
    """Compose and validate a recipe, exactly as ``qcompile build`` and ``qcompile plan`` do."""
    return validate(compose(config_name, overrides, config_dir).data)
