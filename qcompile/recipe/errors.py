"""Turns pydantic validation errors into one short line per root cause, naming the recipe key."""

from __future__ import annotations

import difflib
from typing import Any

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


def _choices(expected: str) -> list[str]:
    return [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",") if c.strip()]


def _describe(err: dict[str, Any]) -> str:
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
        return "unknown key (not part of this section; check the spelling)"
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
    lines = []
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        key = getattr(cause, "key", None) or _key_path(tuple(err["loc"]), data) or "recipe"
        line = f"{key}: {_describe(err)}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)
