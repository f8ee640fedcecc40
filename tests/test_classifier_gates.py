"""Classifier gates (issue #9): top-1 and top-5 accuracy drops with labels, top-1 agreement and top-5 overlap with
FP32 always; a gate the data cannot measure is bad input at plan time."""

from __future__ import annotations

import pytest


def _result(top5_overlap=0.6, fp32_top5=0.75, int8_top5=0.5):
    return {"variant": "int8", "reference": "fp32",
            "fidelity": {"top1_agreement": 1.0, "top5_overlap": top5_overlap, "cosine_mean": 0.99},
            "scores": {"fp32": {"top1": 0.5, "top5": fp32_top5}, "int8": {"top1": 0.5, "top5": int8_top5}},
            "drop": {"top1": 0.0, "top5": round(fp32_top5 - int8_top5, 6)}}


def test_top5_gates_fail_and_pass_on_measured_values():
    from qcompile.steps.compare import CompareOutputsStep

    check = CompareOutputsStep().check
    assert check(_result(), {"min_top5_overlap": 0.6, "max_top5_drop": 0.25}) is None
    failed = check(_result(), {"min_top5_overlap": 0.8, "max_top5_drop": 0.1})
    assert "top5_overlap with fp32 is 0.6000; eval.min_top5_overlap asks at least 0.8" in failed
    assert "int8 top5 accuracy 0.5000 is 25.00 points below fp32 0.7500; eval.max_top5_drop allows 10.00" in failed


def test_a_top5_drop_gate_without_labels_is_bad_input():
    from qcompile.errors import BadInput
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe

    base = ["model=resnet18", "data=synthetic", "eval.max_accuracy_drop=null"]
    with pytest.raises(BadInput, match=r"eval.max_top5_drop: .*set eval.max_top5_drop=null"):
        compile_plan(load_recipe("demo", [*base, "eval.max_top5_drop=0.01"]))
    plan = compile_plan(load_recipe("demo", [*base, "eval.min_top5_overlap=0.9"]))
    assert plan.node("compare.int8").gate["min_top5_overlap"] == 0.9
