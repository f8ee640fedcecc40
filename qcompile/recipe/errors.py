"""Turns pydantic validation errors into one short line per root cause, naming the recipe key."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, get_args, get_origin

from pydantic import ValidationError

_MANY_CHOICES = 8


def _key_path(loc: tuple[Any, ...], data: Any) -> str:
    """Dotted recipe key for a pydantic ``loc``, without the discriminator tags pydantic inserts."""
    parts: list[str] = []
    cur = data
    for item in loc:
        if isinstance(cur, dict) and isinstance(item, str) and item not in cur and cur.get("kind") == item:
            continue  # a union tag, not a key the user wrote
        parts.append(f"[{item}]" if isinstance(item, int) else item)
        if isinstance(cur, dict):
            cur = cur.get(item)
        elif isinstance(cur, list) and isinstance(item, int) and item < len(cur):
            cur = cur[item]
        else:
            cur = None
    return ".".join(parts).replace(".[", "[")


def _section_fields(loc: tuple[Any, ...], data: Any) -> list[str]:
    """Field names of the section that holds ``loc``'s last key (for "did you mean" on an unknown key)."""
    from pydantic import BaseModel

    from .schema import Recipe

    model: Any = Recipe
    cur = data
    for item in loc[:-1]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        if item not in model.model_fields:
            continue  # a union tag pydantic inserted
        model = pick_member(model.model_fields[item].annotation, cur.get(item) if isinstance(cur, dict) else None)
        cur = cur.get(item) if isinstance(cur, dict) else None
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _kind_of_section(loc: tuple[Any, ...], data: Any) -> str | None:
    """``quant.kind=dynamic`` for a key of a kind section (a key one kind has and another lacks reads clearly)."""
    cur, path = data, []
    for item in loc[:-1]:
        if isinstance(cur, dict) and item in cur:
            cur = cur[item]
            path.append(str(item))
    kind = cur.get("kind") if isinstance(cur, dict) else None
    return f"{'.'.join(path)}.kind={kind}" if isinstance(kind, str) and path else None


def pick_member(annotation: Any, value: Any) -> Any:
    """The model class inside ``annotation`` (unwrapping Annotated, Optional and kind-discriminated unions)."""
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) else []
    if not args:
        return annotation
    if get_origin(annotation) is Annotated:
        return pick_member(args[0], value)
    kind = value.get("kind") if isinstance(value, dict) else None
    for member in args:
        field = getattr(member, "model_fields", {}).get("kind")
        if field is not None and kind in get_args(field.annotation):
            return member
    return pick_member(args[0], value) if len(args) == 1 else args[0]


def _choices(expected: str) -> list[str]:
    return [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",") if c.strip()]


def _describe(err: dict[str, Any], data: Any) -> str:
    typ, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if typ == "literal_error":
        choices = _choices(ctx.get("expected", ""))
        if len(choices) > _MANY_CHOICES:
            close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            return f"{value!r} is not a known choice; {hint}({len(choices)} choices, see schemas/recipe.schema.json)"
        return f"{value!r} is not one of: {', '.join(choices)}"
    if typ == "union_tag_invalid":
        return f"kind {ctx.get('tag')!r} is not one of: {ctx.get('expected_tags', '').replace(chr(39), '')}"
    if typ == "union_tag_not_found":
        return "missing 'kind' (say which kind of section this is)"
    if typ == "extra_forbidden":
        fields = _section_fields(tuple(err["loc"]), data)
        close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        who = _kind_of_section(tuple(err["loc"]), data) or "this section"
        return f"unknown key; {hint}{who} takes: {', '.join(fields)}" if fields else "unknown key"
    if typ == "missing":
        return "required but missing"
    if typ in ("path_not_file", "path_not_exists"):
        return f"file not found: {value}"
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(value, (dict, list)):
        return msg
    return f"{msg} (got {value!r})"


def format_validation_error(exc: ValidationError, data: Any) -> str:
    """One line per distinct problem: ``key: what is wrong``."""
    problems: dict[str, list[str]] = {}  # what is wrong -> the keys it is wrong at
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        key = getattr(cause, "key", None) or _key_path(tuple(err["loc"]), data) or "recipe"
        # A validator's own message names the value when it matters: one problem at several keys (a package
        # that is not installed, named by three paths) is one line.
        what = str(cause) if isinstance(cause, ValueError) and getattr(cause, "whole", False) else \
            _describe(err, data)
        if key not in problems.setdefault(what, []):
            problems[what].append(key)
    return "\n".join(f"{', '.join(keys)}: {what}" for what, keys in problems.items())
