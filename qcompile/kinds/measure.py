"""The recipe's measurement sections (``eval``, ``bench``): not kinds, but sections the measure steps read."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from .section import Section


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
    batch_size: PositiveInt = 64


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
GATES = tuple(name for name in EvalSpec.model_fields if name != "batch_size")
