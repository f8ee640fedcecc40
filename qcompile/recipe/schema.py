"""The recipe model: one section per group (data, model, quant, target), each a union of the registered kinds
discriminated on ``kind``, plus the eval and bench sections.

Every section refuses unknown keys, so a mistake is reported once, at the key that is wrong, instead of as a
cascade of union errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, PositiveInt, create_model

from ..kinds import Section, kinds

SCHEMA_VERSION = 2  # 2: normalize moved from data.mnist to the model; target.isa; onnx signature from the file


def _union(group: str) -> Any:
    members = tuple(kinds(group).values())
    return Annotated[Union[members], Field(discriminator="kind")]  # type: ignore[valid-type]


class EvalSpec(Section):
    """Evaluation batch size and the quality gates (exit 3 when one fails)."""

    max_accuracy_drop: float | None = Field(
        0.01, ge=0, le=1, description="fail the build (exit 3) above this top-1 accuracy drop; needs labelled data "
                                      "(null for data without labels)")
    max_top5_drop: float | None = Field(
        None, ge=0, le=1, description="fail the build (exit 3) above this top-5 accuracy drop; needs labelled data")
    min_top1_agreement: float | None = Field(
        None, ge=0, le=1, description="fail the build below this top-1 agreement with FP32 (works without labels)")
    min_top5_overlap: float | None = Field(
        None, ge=0, le=1, description="fail the build below this mean top-5 overlap with FP32 (works without labels)")
    min_cosine: float | None = Field(
        None, ge=-1, le=1, description="fail the build below this mean output cosine with FP32 (works without labels)")
    batch_size: PositiveInt = 64


class BenchSpec(Section):
    """Latency measurement: batch sizes, warm-up runs, and how long to time each batch size.

    Each batch size is timed until the 95% confidence interval of its p50 lies within +-``ci_width`` of the
    p50, with at least ``iterations`` runs and at most ``max_seconds`` of timed runs beyond them.
    """

    batch_sizes: list[PositiveInt] = Field([1, 8], min_length=1)
    warmup: int = Field(10, ge=0)
    iterations: PositiveInt = Field(50, description="minimum number of timed runs per batch size")
    ci_width: float = Field(0.05, gt=0, lt=1, description="target relative half-width of the p50's 95% "
                            "confidence interval (0.05: +-5%)")
    max_seconds: float = Field(10.0, gt=0, description="time budget per batch size: stop timing after this many "
                               "seconds of runs even when the CI target is not reached (recorded as ci_reached)")


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


__all__ = ["Recipe", "SCHEMA_VERSION", "recipe_json_schema"]
