"""``~group.key`` on the command line: deleting a recipe key, whatever its value.

Hydra refuses to delete a key whose value is null (``~model.weights`` fails: "does not exist"), so qcompile takes
plain key deletions out of the overrides and applies them to the composed recipe itself. Deletions of a group
(``~model``) or with a value (``~key=value``) are left to Hydra.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from ..errors import BadInput

KEY_DELETION = re.compile(r"^~([A-Za-z_]\w*(?:\.\w+)+)$")
ENV = "QCOMPILE_DELETE_KEYS"  # how `qcompile build` hands them to its Hydra task (also in sweep workers)


def split_deletions(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the overrides Hydra should apply, the dotted keys qcompile deletes after composing)."""
    kept, keys = [], []
    for o in overrides:
        m = KEY_DELETION.match(o)
        if m:
            keys.append(m.group(1))
        else:
            kept.append(o)
    return kept, keys


def apply_deletions(data: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Delete each dotted key from the composed recipe; a key the recipe does not have is bad input."""
    for dotted in keys:
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise BadInput("cannot delete it: the recipe has no such key", key=dotted)
        del node[last]
    return data
