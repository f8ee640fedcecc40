"""``quant.exclude``: nodes kept in float, by the names and op types ``artifacts/model.fp32.onnx`` shows, and how
they resolve to the nodes of the optimized model that ORT quantizes (the pre-processing step's ``names.json``)."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any

from pydantic import Field

from ...errors import BadInput
from ..section import Section

_PATTERN = set("*?[")


def _matches(name: str, want: str) -> bool:
    """``want`` is a shell-style pattern when it holds * ? or [, else an exact name."""
    return fnmatch.fnmatchcase(name, want) if _PATTERN & set(want) else name == want


class Exclude(Section):
    """Nodes kept in float: by name as ``artifacts/model.fp32.onnx`` shows them (netron, the sensitivity table,
    ``qcompile plan``), by shell-style pattern, or by op type."""

    names: list[str] = Field([], description="node names of model.fp32.onnx; a name with * ? or [..] is a "
                                             "pattern matching several (\"*/classifier/*\")")
    op_types: list[str] = Field([], description="every node of these op types (as model.fp32.onnx shows them)")

    def __bool__(self) -> bool:
        return bool(self.names or self.op_types)

    def plus(self, names: list[str]) -> Exclude:
        """This exclusion with ``names`` added (those already listed are not repeated)."""
        return self.model_copy(update={"names": [*self.names, *(n for n in names if n not in self.names)]})


def check_names(exclude: Exclude, nodes: list[tuple[str, str]]) -> None:
    """Refuse names, patterns and op types that match no node of the FP32 model (``nodes``: (name, op type))."""
    names = [n for n, _ in nodes]
    have = set(names)
    for want in exclude.names:
        if _PATTERN & set(want):
            if not any(fnmatch.fnmatchcase(n, want) for n in names):
                raise BadInput(f"the pattern {want!r} matches no node of model.fp32.onnx (names look like "
                               f"{', '.join(names[:3])})", key="quant.exclude.names")
        elif want not in have:
            close = difflib.get_close_matches(want, names, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else f"its nodes are named like {', '.join(names[:3])}"
            raise BadInput(f"model.fp32.onnx has no node named {want!r} ({hint} names are as netron, the "
                           "sensitivity table and `qcompile plan` show them)", key="quant.exclude.names")
    ops = sorted({op for _, op in nodes})
    for op in exclude.op_types:
        if op not in ops:
            raise BadInput(f"model.fp32.onnx has no {op} node (its op types: {', '.join(ops)})",
                           key="quant.exclude.op_types")


def resolve(exclude: Exclude, names_map: dict[str, Any]) -> list[str]:
    """The optimized model's node names to pass ORT as ``nodes_to_exclude`` (``names_map``: ``names.json``)."""
    fp32 = names_map["nodes"]
    check_names(exclude, [(n["name"], n["op_type"]) for n in fp32])
    chosen: list[str] = []
    for n in fp32:
        if any(_matches(n["name"], w) for w in exclude.names) or n["op_type"] in exclude.op_types:
            chosen += n["optimized"]
    # An op type also matches nodes the optimizer made (a fused Gemm, the Mul of a decomposed HardSwish).
    chosen += [name for name, o in names_map["optimized"].items() if o["op_type"] in exclude.op_types]
    return sorted(set(chosen))
