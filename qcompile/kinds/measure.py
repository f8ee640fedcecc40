"""The recipe's measurement sections (``eval``, ``bench``): not kinds, but sections the measure steps read."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveInt, model_validator

from ..errors import BadInput
from .section import Section, UserDir

# A metric or gate name: it becomes a report key, a sweep column (user_<name>) and part of a recipe key.
METRIC_NAME = r"^[A-Za-z_][\w]*$"


class UserMetric(Section):
    """A metric of the user's own: ``package.module:function`` called with the outputs (a dict of named numpy
    arrays, by output name) and the labels of the evaluation split (None without labels); returns a float."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                          description="package.module:function(outputs, labels) -> float")
    higher_is_better: bool = Field(True, description="false for an error (lower is better): drops and the Pareto "
                                                     "front then read the other way")
    root: UserDir = Field(Path("."), description="folder the module is imported from (default: the working "
                                                 "directory)")


class UserGate(Section):
    """A gate on a user metric (``eval.metrics.<name>``): fails the build (exit 3) when the quantized variant's
    value drops more than ``max_drop`` below FP32's (a drop respects higher_is_better), falls below ``min`` or
    rises above ``max``."""

    max_drop: float | None = Field(None, description="largest allowed drop from FP32's value (in the metric's "
                                                     "units; for a lower-is-better metric, a rise)")
    min: float | None = Field(None, description="the smallest value the variant may score")
    max: float | None = Field(None, description="the largest value the variant may score (errors)")

    @model_validator(mode="after")
    def _some_limit(self) -> UserGate:
        if self.max_drop is None and self.min is None and self.max is None:
            raise ValueError("a gate needs max_drop, min or max")
        return self


class EvalSpec(Section):
    """Evaluation batch size and the quality gates (exit 3 when one fails)."""

    max_accuracy_drop: float | None = Field(
        0.01, ge=0, le=1, description="fail the build (exit 3) above this top-1 accuracy drop; needs labelled data "
                                      "(null for data without labels)")
    max_top5_drop: float | None = Field(
        None, ge=0, le=1, description="fail the build (exit 3) above this top-5 accuracy drop; needs labelled data")
    max_correlation_drop: float | None = Field(
        None, ge=0, le=2, description="fail the build (exit 3) above this drop of the Spearman correlation between "
                                      "embedding cosine and human similarity scores; needs scored pairs")
    min_top1_agreement: float | None = Field(
        None, ge=0, le=1, description="fail the build below this top-1 agreement with FP32 (works without labels)")
    min_top5_overlap: float | None = Field(
        None, ge=0, le=1, description="fail the build below this mean top-5 overlap with FP32 (works without labels)")
    min_cosine: float | None = Field(
        None, ge=-1, le=1, description="fail the build below this mean output cosine with FP32 (works without labels)")
    metrics: dict[str, UserMetric] = Field(
        {}, description="your own metrics by name, computed for FP32 and every variant: "
                        "{name: {function: package.module:function, higher_is_better: true}}",
        json_schema_extra={"propertyNames": {"pattern": METRIC_NAME}})
    gates: dict[str, UserGate] = Field(
        {}, description="gates on your metrics, by metric name: {name: {max_drop: 0.01, min: 0.9}}")
    batch_size: PositiveInt = 64

    @model_validator(mode="after")
    def _metric_names(self) -> EvalSpec:
        import re

        for name in self.metrics:
            if not re.match(METRIC_NAME, name):
                raise ValueError(f"metric name {name!r} must be an identifier (letters, digits, _)")
        return self


class BenchSpec(Section):
    """Latency measurement: batch sizes, warm-up runs, and how long to time each batch size.

    Each batch size is timed until the 95% confidence interval of its p50 lies within +-``ci_width`` of the
    p50, with at least ``iterations`` runs and at most ``max_seconds`` of timed runs beyond them.
    """

    batch_sizes: list[PositiveInt] = Field([1, 8], min_length=1)
    sequence_lengths: list[PositiveInt] | None = Field(
        None, min_length=1, description="token models: time every batch size at each of these sequence lengths, "
                                        "fed real evaluation text cut (or repeated) to that many tokens, all of "
                                        "them attended (null: the evaluation texts as tokenized)")
    warmup: int = Field(10, ge=0)
    iterations: PositiveInt = Field(50, description="minimum number of timed runs per batch size")
    ci_width: float = Field(0.05, gt=0, lt=1, description="target relative half-width of the p50's 95% "
                            "confidence interval (0.05: +-5%)")
    max_seconds: float = Field(10.0, gt=0, description="time budget per batch size: stop timing after this many "
                               "seconds of runs even when the CI target is not reached (recorded as ci_reached)")


# The eval fields that are quality gates: checked on every build against the compare step's result, never keyed.
# ``gates`` (the user metrics' gates) is one of them; ``metrics`` is not: a metric changes what evaluate writes.
GATES = tuple(name for name in EvalSpec.model_fields if name not in ("batch_size", "metrics"))


def metric_source(name: str, metric: UserMetric) -> Path:
    """The module file of ``eval.metrics.<name>``, checked without running any of the user's code: the file must
    exist under the metric's root and bind the function's name at its top level. Bad input otherwise, at plan time,
    so a misspelt metric never costs an evaluation (its key holds the file's content digest)."""
    import ast

    from .user_code import function_source

    fn = metric.function.partition(":")[2]
    key = f"eval.metrics.{name}.function"
    path = function_source(metric.function, metric.root, key, f"eval.metrics.{name}.root")
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError) as e:
        raise BadInput(f"{metric.function} does not import: {path} has a syntax error ({e})", key=key) from None
    if fn not in _top_level_names(tree) and not _star_import(tree):
        raise BadInput(f"{metric.function}: {path} defines no {fn!r} at its top level", key=key)
    return path.resolve()  # absolute in the lockfile, so a rebuild from another folder finds it


def _top_level_names(tree) -> set[str]:
    """Names a module binds at its top level (functions, classes, assignments, imports): where a metric lives."""
    import ast

    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _star_import(tree) -> bool:
    """True when the module does ``from x import *``: its names cannot be known without running it."""
    import ast

    return any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body)
