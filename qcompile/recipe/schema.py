"""The recipe model: one section per group (data, model, quant, target), each a union of the registered kinds
discriminated on ``kind``, plus the eval and bench sections.

Every section refuses unknown keys, so a mistake is reported once, at the key that is wrong, instead of as a
cascade of union errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, create_model

from ..kinds import Section, kinds
from ..kinds.measure import BenchSpec, EvalSpec

SCHEMA_VERSION = 2  # 2: normalize moved from data.mnist to the model; target.isa; onnx signature from the file


def _union(group: str) -> Any:
    members = tuple(kinds(group).values())
    return Annotated[Union[members], Field(discriminator="kind")]  # type: ignore[valid-type]


Recipe = create_model(
    "Recipe",
    __base__=Section,
    __doc__="A whole build: what model, which data, which quantization, for which target, and how to judge it.",
    name=(str, "build"),
    model=(_union("model"), ...),
    data=(_union("data"), ...),
    quant=(_union("quant"), ...),
    target=(_union("target"), ...),
    eval=(EvalSpec, EvalSpec()),
    bench=(BenchSpec, BenchSpec()),
)


def recipe_json_schema() -> dict:
    """The JSON Schema of a recipe, as written to ``schemas/recipe.schema.json``."""
    schema = Recipe.model_json_schema()
    schema["$id"] = f"https://qcompile.dev/schemas/recipe.v{SCHEMA_VERSION}.json"
    schema["title"] = "qcompile recipe"
    return schema


__all__ = ["BenchSpec", "EvalSpec", "Recipe", "SCHEMA_VERSION", "recipe_json_schema"]
