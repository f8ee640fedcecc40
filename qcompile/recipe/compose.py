"""Composing a recipe through Hydra's public compose API: the one way ``qcompile build``, ``qcompile plan`` and the
library read a recipe (``-m`` sweeps compose each job the same way inside Hydra's multirun).

The packaged recipes are the module ``qcompile.recipes``; a user's ``--config-dir`` is searched before them, as
Hydra's own ``--config-dir`` does. Every failure becomes a one-line ``BadInput`` naming the key or file.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import BadInput
from .files import diagnose, resolve_relative_paths
from .overrides import Overrides, apply_deletions, check_key, prepare

RECIPES_MODULE = "qcompile.recipes"
DEFAULT_RECIPE = "demo"
_WRAPPER = "qcompile_packaged_primary"  # a primary config that only pulls in a packaged recipe (see _initialize)


@dataclass(frozen=True)
class Composition:
    """A composed recipe as plain data, with what it was composed from and where Hydra would write it."""

    data: dict[str, Any]
    config_name: str
    config_dir: Path | None
    overrides: Overrides
    choices: dict[str, str] = field(default_factory=dict)
    run_dir: str = ""
    sweep_dir: str = ""

    def write(self, folder: Path) -> None:
        """Record what was composed in a build folder: ``recipe.yaml`` (resolved) and ``overrides.yaml``."""
        import yaml

        (folder / "recipe.yaml").write_text(yaml.safe_dump(self.data, sort_keys=False))
        (folder / "overrides.yaml").write_text(yaml.safe_dump(list(self.overrides.given)))


@contextlib.contextmanager
def _initialize(config_name: str, config_dir: Path | None) -> Iterator[tuple[str, list[str]]]:
    """Hydra initialised for ``config_name``: yields (the primary config's name, overrides the search path needs)."""
    from hydra import initialize_config_dir, initialize_config_module

    if config_dir is None:
        with initialize_config_module(RECIPES_MODULE, version_base="1.3"):
            yield config_name, []
        return
    search = [f"hydra.searchpath=[pkg://{RECIPES_MODULE}]"]  # the packaged recipes, after the user's folder
    with initialize_config_dir(str(config_dir), version_base="1.3"):
        if (config_dir / f"{config_name}.yaml").is_file():
            yield config_name, search
            return
        # A packaged recipe with the user's folder first: Hydra finds a primary config only in the primary folder,
        # so a stored primary pulls the packaged one in; its defaults then resolve through the user's folder first.
        from hydra.core.config_store import ConfigStore

        ConfigStore.instance().store(name=_WRAPPER, node={"defaults": [config_name, "_self_"]})
        yield _WRAPPER, search


def compose(config_name: str = DEFAULT_RECIPE, overrides: Sequence[str] = (),
            config_dir: str | Path | None = None, sweep: bool = False) -> Composition:
    """Compose ``config_name`` with ``overrides`` (packaged recipes, ``config_dir`` searched first).

    The result's ``data`` has Hydra's node removed, interpolations resolved, ``~key`` deletions applied and the
    user's relative file paths resolved against the recipe file that wrote them. ``sweep`` resolves
    ``hydra.sweep.dir`` instead of ``hydra.run.dir``.
    """
    import yaml
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    prepared = prepare(overrides)
    config_name = config_name.removesuffix(".yaml")  # Hydra takes either spelling
    folder = None
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise BadInput(f"config dir not found: {config_dir}", key="--config-dir")
    try:
        with _initialize(config_name, folder) as (primary, search):
            cfg = hydra_compose(primary, [*search, *prepared.hydra], return_hydra_config=True)
            return from_config(cfg, config_name, folder, prepared, "hydra.sweep.dir" if sweep else "hydra.run.dir")
    except (HydraException, OmegaConfBaseException, UnicodeError, OSError, yaml.YAMLError) as e:
        raise _composition_error(e, config_name, folder, prepared) from None


def from_config(cfg: Any, config_name: str, folder: Path | None, prepared: Overrides,
                out_key: str | None = "hydra.run.dir") -> Composition:
    """The ``Composition`` of a config Hydra composed (by ``compose``, or for a job of a multirun, whose folder
    Hydra chose: ``out_key`` None)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    if "hydra" in cfg:
        hydra_node = cfg.hydra
        with open_dict(cfg):
            del cfg["hydra"]
    else:  # a multirun job's config: Hydra keeps its node aside
        hydra_node = HydraConfig.get()
    choices = {k: str(v) for k, v in hydra_node.runtime.choices.items() if not k.startswith("hydra/")}
    hydra_config = HydraConfig.instance()
    outside_a_job = hydra_config.cfg is None
    if outside_a_job:  # ${hydra:...} resolves against this composition, as in a Hydra run, and no other
        hydra_config.set_config(OmegaConf.create({"hydra": hydra_node}))
    try:
        data = OmegaConf.to_container(cfg, resolve=True)  # the recipe's own errors first, then the folder's
        if out_key:
            with open_dict(cfg):
                cfg["hydra"] = hydra_node
        out = _resolve_dir(cfg, out_key) if out_key else ""
    finally:
        if outside_a_job:
            hydra_config.cfg = None  # the next composition must not resolve against this one
    data = apply_deletions(data, prepared.deletions)  # type: ignore[arg-type]
    data = resolve_relative_paths(data, folder, config_name, choices, prepared.given)
    sweep = out_key == "hydra.sweep.dir"
    return Composition(data, config_name, folder, prepared, choices,
                       run_dir="" if sweep else out, sweep_dir=out if sweep else "")


def _resolve_dir(cfg: Any, where: str) -> str:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return str(OmegaConf.select(cfg, where, throw_on_missing=True))
    except OmegaConfBaseException as e:
        raise BadInput(str(e).splitlines()[0], key=where) from None


def _composition_error(e: BaseException, config_name: str, folder: Path | None, prepared: Overrides) -> BadInput:
    """One line for what went wrong while composing, naming the key, override or file."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    missing_key = re.match(r"Could not override '([^']+)'", str(e))
    if missing_key:  # a key that is neither a recipe field nor a config group: the schema's own answer
        try:
            check_key(missing_key.group(1))
        except BadInput as unknown:
            return unknown
    if folder is not None:
        found = diagnose(folder, e, config_name)  # a broken file the composition read: name it
        if found is not None:
            return found
    if isinstance(e, MissingConfigException):
        missing = e.missing_cfg_file or ""
        if "/" not in missing and (e.options is None or not missing):
            where = f" in {folder} or" if folder else ""
            return BadInput(f"no recipe {config_name!r}{where} among the packaged recipes", key="--config-name")
        group, _, name = missing.rpartition("/")
        options = sorted(e.options or [])
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return BadInput(f"no {group} recipe {name!r}; {hint}choose one of: {', '.join(options)}", key=group)
    if str(e).startswith("Error merging override"):
        key = str(e).split()[-1].split("=", 1)[0].lstrip("+~")
        cause = str(e.__cause__ or "").splitlines() or ["cannot be set to that value"]
        if "Cannot merge" in cause[0]:
            cause = ["a section takes a mapping of keys; the override gives it a list or a value"]
        return BadInput(cause[0], key=key)
    if "Cannot merge" in str(e) and not getattr(e, "full_key", None):
        key = _key_of(e, folder, prepared)
        return BadInput("a section takes a mapping of keys; the recipe gives it a list or a value"
                        + (f" ({str(e).split(':')[0]})" if str(e).startswith("In '") else ""), key=key)
    if isinstance(e, OmegaConfBaseException):
        key = getattr(e, "full_key", None)
        first = str(e).splitlines()[0]
        return BadInput(first, key=key or None)
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    return BadInput("; ".join(lines[:2]) or type(e).__name__)


def _key_of(e: BaseException, folder: Path | None, prepared: Overrides) -> str | None:
    """The key a merge error came from when OmegaConf did not say (a list or a value where a section belongs):
    an override, else a key of the recipe file the error names."""

    import yaml

    from .overrides import takes_keys

    text = str(e)
    if "Cannot merge" not in text:
        return None
    for o in prepared.given:
        key, _, value = o.partition("=")
        if value.strip().startswith(("[", "{")):
            return key.lstrip("+~")
    named = re.match(r"In '([^']+)'", text)
    if folder is None or named is None:
        return None
    try:
        data = yaml.safe_load((folder / f"{named.group(1)}.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    for key, value in (data or {}).items():
        if isinstance(value, list) and takes_keys(str(key)):
            return str(key)  # a section, and this file gives it a list
    return None
