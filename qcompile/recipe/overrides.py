"""Command-line overrides, prepared so that the recipe's schema judges them, not Hydra's config files.

Group files hold only what differs from a section's defaults, so a field can be absent from the composed config
and still be a field of the recipe. Every ``section.field=value`` is therefore handed to Hydra as
``++section.field=value`` (set it, adding the key when no file did), and validation then judges the key against
the chosen kind's section: a misspelt key gets the schema's "did you mean" at once, instead of Hydra's advice to
append it with ``+`` and a second round trip. A sweep checks its swept keys up front (``check_key``), since its
jobs compose only once they run.

``~section.field`` deletes a key (returns it to its default); qcompile applies those to the composed recipe itself,
since Hydra refuses to delete a key whose value is null or that no file set.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Sequence, Union, get_args, get_origin

from ..errors import BadInput
from ..kinds import GROUPS

_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")


@dataclass(frozen=True)
class Overrides:
    """The user's overrides split for composing: what Hydra applies, and the keys qcompile deletes after it."""

    given: tuple[str, ...]
    hydra: tuple[str, ...]
    deletions: tuple[str, ...]


def prepare(overrides: Sequence[str]) -> Overrides:
    """Rewrite field changes as ``++``, take out key deletions, refuse a list where a group takes one name."""
    from .schema import Recipe

    hydra, deletions, sets = [], [], []
    for o in overrides:
        key, eq, value = o.partition("=")
        bare = key.lstrip("+~")
        prefix = key[: len(key) - len(bare)]
        top = bare.split(".")[0]
        if prefix == "" and bare in GROUPS and value.lstrip().startswith(("[", "{")):
            raise BadInput(f"takes the name of one {bare} recipe ({bare}=NAME), not a list or mapping", key=bare)
        if not _KEY.match(bare) or top not in Recipe.model_fields or (prefix in ("", "~") and bare in GROUPS):
            hydra.append(o)  # group choices (a user's own groups too), hydra settings, syntax Hydra itself reports
        elif prefix == "~" and not eq:
            check_key(bare)
            deletions.append(bare)
        else:
            sets.append(bare)
            hydra.append(f"++{o}" if prefix == "" and eq else o)
    for gone in deletions:  # deletions apply after composing: a value set beneath one would vanish unseen
        clash = next((k for k in sets if k == gone or k.startswith(gone + ".")), None)
        if clash:
            raise BadInput(f"~{gone} deletes what {clash}=... sets; give one of them", key=gone)
    return Overrides(tuple(overrides), tuple(hydra), tuple(deletions))


def _models(annotation: Any) -> list[Any]:
    """The pydantic models a field holds (unwrapping Annotated, Optional and unions of kinds)."""
    from pydantic import BaseModel

    origin = get_origin(annotation)
    if origin is Annotated:
        return _models(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _models(a)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _walk(dotted: str) -> list[Any]:
    """The models the recipe key ``dotted`` holds (empty for a value); ``BadInput`` when no section has it."""
    from .schema import Recipe

    models: list[Any] = [Recipe]
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if part not in fields:
            where = ".".join(parts[:i]) or "the recipe"
            close = difflib.get_close_matches(part, sorted(fields), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise BadInput(f"unknown key; {hint}{where} takes: {', '.join(sorted(fields))}", key=dotted)
        models = [m for model in models if part in model.model_fields
                  for m in _models(model.model_fields[part].annotation)]
        if not models:
            break  # a value (number, list, free-form mapping): the schema judges it when validating
    return models


def check_key(dotted: str) -> None:
    """Raise ``BadInput`` naming ``dotted`` when no section of the recipe has that key (any kind of a group)."""
    _walk(dotted)


def takes_keys(dotted: str) -> bool:
    """Whether the recipe key ``dotted`` is a section (a mapping of options), not a value."""
    try:
        return bool(_walk(dotted))
    except BadInput:
        return False


def apply_deletions(data: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Delete each dotted key from the composed recipe (a key no file set is already at its default)."""
    for dotted in keys:
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return data
