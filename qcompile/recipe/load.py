"""Compose a recipe with Hydra, then validate it with pydantic; every failure becomes a ``BadInput``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from ..errors import BadInput
from .deletions import apply_deletions, split_deletions
from .errors import format_validation_error
from .files import check_recipe_dir, resolve_relative_paths
from .schema import Recipe

RECIPES_MODULE = "qcompile.recipes"
DEFAULT_RECIPE = "demo"


def validate(data: dict[str, Any]) -> Recipe:
    """A ``Recipe`` from a plain dict (Hydra's ``hydra`` node, if any, is ignored)."""
    data = {k: v for k, v in data.items() if k != "hydra"}
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise BadInput(format_validation_error(e, data)) from None


def to_container(cfg: Any) -> dict[str, Any]:
    """Resolve a Hydra/OmegaConf config into a plain dict; interpolation errors are bad input."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise BadInput(f"recipe: {e}".splitlines()[0]) from None


def compose(config_name: str = DEFAULT_RECIPE, overrides: Sequence[str] = (),
            config_dir: str | Path | None = None) -> dict[str, Any]:
    """Compose a recipe the way ``qcompile build`` does: packaged recipes, plus ``config_dir`` searched first."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    search_path = create_config_search_path(f"pkg://{RECIPES_MODULE}")
    if config_dir is not None:
        d = Path(config_dir)
        check_recipe_dir(d)
        # As Hydra's own --config-dir does: the user's folder is searched before the packaged recipes.
        search_path.prepend("command-line", f"file://{d.resolve()}")
    overrides, deletions = split_deletions(overrides)
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="qcompile", config_search_path=search_path)
        cfg = hydra.compose_config(config_name, list(overrides), run_mode=RunMode.RUN,
                                   with_log_configuration=False)
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]  # holds run-time interpolations that only resolve inside a Hydra job
    except (HydraException, OmegaConfBaseException) as e:
        raise BadInput(hydra_message(e)) from None
    finally:
        GlobalHydra.instance().clear()
    data = apply_deletions(to_container(cfg), deletions)
    return resolve_relative_paths(data, config_dir, config_name, choices, overrides)


def hydra_message(e: BaseException) -> str:
    """Hydra's error without its advice about stack traces."""
    lines = [ln for ln in str(e).splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    return "\n".join(lines[:4]) or type(e).__name__


def load_recipe(config_name: str = DEFAULT_RECIPE, overrides: Sequence[str] = (),
                config_dir: str | Path | None = None) -> Recipe:
    """Compose and validate a recipe: the library counterpart of ``qcompile plan``'s recipe arguments."""
    return validate(compose(config_name, overrides, config_dir))
