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
    assert "int8 top-5 overlap with fp32 is 60.00%; eval.min_top5_overlap=0.8 asks at least 80.00%" in failed
    assert ("int8 top-5 accuracy 50.00% is 25.00 points below fp32's 75.00%; eval.max_top5_drop=0.1 allows "
            "10.00 points") in failed


def test_a_top5_drop_gate_without_labels_is_bad_input():
    from qcompile.errors import BadInput
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe

    base = ["model=resnet18", "data=synthetic", "eval.max_accuracy_drop=null"]
    with pytest.raises(BadInput, match=r"eval.max_top5_drop: .*set eval.max_top5_drop=null"):
        compile_plan(load_recipe("demo", [*base, "eval.max_top5_drop=0.01"]))
    plan = compile_plan(load_recipe("demo", [*base, "eval.min_top5_overlap=0.9"]))
    assert plan.node("compare.int8").gate["min_top5_overlap"] == 0.9


def test_a_failed_gate_says_which_build(cache_dir, tmp_path):
    """GateFailed carries the build's folder, id and report: the report is written before it is raised."""
    import json

    import qcompile
    from qcompile import GateFailed

    from .test_trust import labels, tiny_recipes

    args = tiny_recipes(tmp_path, y=labels())
    recipe = qcompile.load_recipe("tiny", ["eval.min_cosine=1.0"], args[1])
    with pytest.raises(GateFailed) as e:
        qcompile.build(recipe, tmp_path / "out")
    assert e.value.out_dir == tmp_path / "out" and e.value.build_id
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert e.value.report == on_disk and on_disk["build_id"] == e.value.build_id
    assert [g["message"] for g in on_disk["gates"]] == [str(e.value)] and "min_cosine" in str(e.value)
