"""A failed gate that helps: its message in one unit (percent and points, the recipe key's own value beside the
limit), the interval note only when the verdict could have gone either way, next steps that apply to this recipe,
and a report, folder and exception that say the bundle is not for deployment."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from .conftest import run_cli

# The demo, small and fast, with ranges clipped at the 50th percentile of each activation: a real, large drop.
FAILING = ["model.train.epochs=1", "data.eval_samples=300", "quant.calibration.samples=64",
           "quant.calibration.method=percentile", "quant.calibration.percentile=50",
           "bench.batch_sizes=[1]", "bench.warmup=1", "bench.iterations=3", "bench.max_seconds=0.5"]


def _result(top1=(1.0, 0.1133), agreement=0.1, cosine=0.5):
    return {"variant": "int8", "reference": "fp32",
            "fidelity": {"top1_agreement": agreement, "top5_overlap": 0.5, "cosine_mean": cosine},
            "scores": {"fp32": {"top1": top1[0], "top5": 1.0}, "int8": {"top1": top1[1], "top5": 0.9}},
            "drop": {"top1": round(top1[0] - top1[1], 6), "top5": 0.1}}


# ---------------------------------------------------------------- the gate's message
def test_accuracy_gate_speaks_percent_and_points():
    from qcompile.steps.compare import CompareOutputsStep

    msg = CompareOutputsStep().check(_result(), {"max_accuracy_drop": 0.01})
    assert msg == ("int8 top-1 accuracy 11.33% is 88.67 points below fp32's 100.00%; "
                   "eval.max_accuracy_drop=0.01 allows 1.00 point")


def test_a_drop_just_past_the_limit_never_reads_as_equal_to_it():
    from qcompile.steps.compare import CompareOutputsStep

    msg = CompareOutputsStep().check(_result(top1=(0.9, 0.88999)), {"max_accuracy_drop": 0.01})
    assert "is 1.001 points below fp32's 90.000%; eval.max_accuracy_drop=0.01 allows 1.000 point" in msg
    msg = CompareOutputsStep().check(_result(top1=(0.9, 0.85)), {"max_accuracy_drop": 0.025})
    assert msg.endswith("eval.max_accuracy_drop=0.025 allows 2.50 points")


def test_fidelity_gates_speak_percent_and_cosine_as_a_number():
    from qcompile.steps.compare import CompareOutputsStep

    msg = CompareOutputsStep().check(_result(agreement=0.875, cosine=0.98765),
                                     {"min_top1_agreement": 0.9, "min_cosine": 0.99})
    assert "int8 top-1 agreement with fp32 is 87.50%; eval.min_top1_agreement=0.9 asks at least 90.00%" in msg
    assert "int8 mean output cosine with fp32 is 0.9877; eval.min_cosine=0.99 asks at least 0.9900" in msg


def test_interval_note_only_when_the_verdict_could_go_either_way():
    from qcompile.steps.compare import drop_interval_note

    far = {"drop": {"top1": 0.8867}, "drop_ci95": [0.8272, 0.9462]}  # the 89-point drop, known to +-6 points
    assert drop_interval_note(far, 0.01) is None
    assert drop_interval_note({"drop": {"top1": 0.0}, "drop_ci95": [-0.004, 0.004]}, 0.01) is None
    assert drop_interval_note({"drop": {"top1": 0.005}, "drop_ci95": [-0.01, 0.02]}, None) is None
    note = drop_interval_note({"drop": {"top1": 0.005}, "drop_ci95": [-0.01, 0.02]}, 0.01)
    assert "-1.00 to 2.00 points" in note and "contains eval.max_accuracy_drop=0.01 (1.00 point)" in note
    assert "the gate passed, but could have gone either way" in note and "data.eval_samples" in note
    note = drop_interval_note({"drop": {"top1": 0.015}, "drop_ci95": [0.0, 0.03]}, 0.01)
    assert "the gate failed, but could have gone either way" in note


# ---------------------------------------------------------------- next steps
def _recipe(**quant):
    q = {"kind": "static", "per_channel": True, "exclude": {"names": [], "op_types": []},
         "calibration": {"method": "minmax", "samples": 256, "percentile": 99.999}}
    q.update(quant)
    return {"name": "mine", "model": {"kind": "mnist_cnn"}, "data": {"kind": "mnist"}, "quant": q}


FAILED = {"gates": [{"step": "compare.int8", "message": "..."}]}


def _overrides(steps: list[str]) -> list[str]:
    """Every override the next steps name, as a shell would pass them."""
    return [o for s in steps for o in shlex.split(s.split(" — ", 1)[0])]


@pytest.fixture
def everything_offered(monkeypatch):
    """A schema with QAT and the fallback field (both added by other changes)."""
    from qcompile.report import next_steps

    monkeypatch.setattr(next_steps, "_offered", lambda kind, field=None: True)


def test_no_next_steps_when_every_gate_passed():
    from qcompile.report.next_steps import next_steps

    assert next_steps(_recipe(), {"gates": []}) == []


def test_static_percentile_clipping_suggests_what_applies(everything_offered):
    from qcompile.report.next_steps import next_steps

    cal = {"method": "percentile", "samples": 64, "percentile": 90.0}
    steps = next_steps(_recipe(per_channel=False, calibration=cal), FAILED)
    overrides = _overrides(steps)
    assert overrides[0] == "quant.calibration.percentile=99.99", "the likeliest cause comes first"
    assert "percentile 90 clips" in steps[0]
    for o in ("quant.calibration.method=minmax", "quant.calibration.method=entropy", "quant.per_channel=true",
              "quant.calibration.samples=256", "quant.fallback.enabled=true", "quant=qat"):
        assert o in overrides, (o, steps)
    assert "quant.calibration.method=percentile" not in overrides, "the method in use"
    assert "quant=int8_static" not in overrides and len(overrides) == len(set(overrides))
    assert all(" — " in s for s in steps), "each says why"


def test_what_the_recipe_already_does_is_not_suggested(everything_offered):
    from qcompile.report.next_steps import next_steps

    steps = next_steps(_recipe(fallback={"enabled": True}), FAILED)
    overrides = _overrides(steps)
    assert "quant.fallback.enabled=true" not in overrides and "quant.per_channel=true" not in overrides
    assert "quant.calibration.method=minmax" not in overrides
    assert not any(o.startswith("quant.calibration.samples=") for o in overrides), "256 samples are not few"
    assert not any(o.startswith("quant.exclude") for o in overrides), "no sensitivity table"


def test_qat_needs_a_torch_model_and_a_training_split(everything_offered):
    from qcompile.report.next_steps import next_steps

    for model, data in (("onnx", "mnist"), ("mnist_cnn", "npz"), ("torchvision", "synthetic")):
        recipe = {**_recipe(), "model": {"kind": model}, "data": {"kind": data}}
        assert "quant=qat" not in _overrides(next_steps(recipe, FAILED)), (model, data)
    recipe = {**_recipe(), "model": {"kind": "torchvision"}, "data": {"kind": "digits"}}
    assert "quant=qat" in _overrides(next_steps(recipe, FAILED))


def test_sensitivity_table_names_the_worst_nodes():
    from qcompile.recipe.load import load_recipe
    from qcompile.report.next_steps import next_steps

    table = {"nodes": [{"name": "/features/features.3/Conv", "nodes": ["/features/features.3/Conv"],
                        "op_type": "Conv", "local_sqnr_db": 12.3},
                       {"name": "/fc/Gemm", "nodes": ["/fc/Gemm"], "op_type": "Gemm", "local_sqnr_db": 15.0},
                       {"name": "conv 7", "nodes": ["conv 7", "relu 7"], "op_type": "Conv+Relu",
                        "local_sqnr_db": 18.2},
                       {"name": "/features/features.9/Conv", "nodes": ["/features/features.9/Conv"],
                        "op_type": "Conv", "local_sqnr_db": 30.1}],
             "samples": 32}
    steps = next_steps(_recipe(exclude={"names": ["/fc/Gemm"], "op_types": []}), {**FAILED, "sensitivity": table})
    line = next(s for s in steps if "quant.exclude.names" in s)
    (override,) = shlex.split(line.split(" — ", 1)[0])
    assert "/features/features.3/Conv (Conv, SQNR 12.3 dB)" in line
    # The names already excluded stay, the next worst are added, and Hydra reads them back exactly.
    recipe = load_recipe("demo", [override])
    assert recipe.quant.exclude.names == ["/fc/Gemm", "/features/features.3/Conv", "conv 7", "relu 7",
                                          "/features/features.9/Conv"]


@pytest.mark.parametrize("sensitivity", [None, {}, {"nodes": []}, {"nodes": "?"}, [1, 2], {"nodes": [{"op": 1}]}])
def test_a_missing_or_odd_sensitivity_table_is_ignored(sensitivity):
    from qcompile.report.next_steps import next_steps

    steps = next_steps(_recipe(), {**FAILED, "sensitivity": sensitivity})
    assert steps and not any("quant.exclude" in s for s in steps)


def test_dynamic_suggests_static_and_per_channel(everything_offered):
    from qcompile.report.next_steps import next_steps

    recipe = _recipe()
    recipe["quant"] = {"kind": "dynamic", "per_channel": False, "exclude": {"names": [], "op_types": []},
                       "op_types": ["MatMul", "Gemm"]}
    overrides = _overrides(next_steps(recipe, FAILED))
    assert {"quant=int8_static", "quant.per_channel=true"} <= set(overrides)
    assert not any(o.startswith("quant.calibration.") for o in overrides), "dynamic calibrates nothing"


def test_only_what_this_schema_accepts_is_suggested():
    """Without stand-ins: QAT and the fallback are suggested exactly when this qcompile has them, and every
    override suggested for the demo validates."""
    from qcompile.kinds import kinds
    from qcompile.recipe.load import load_recipe
    from qcompile.report.next_steps import next_steps

    base = ["quant.calibration.method=percentile", "quant.calibration.percentile=90",
            "quant.calibration.samples=64", "quant.per_channel=false"]
    recipe = load_recipe("demo", base)
    overrides = _overrides(next_steps(recipe.model_dump(mode="json"), FAILED))
    quant = kinds("quant")
    assert ("quant=qat" in overrides) == ("qat" in quant)
    assert ("quant.fallback.enabled=true" in overrides) == ("fallback" in quant["static"].model_fields)
    for o in overrides:
        # A group choice (quant=qat) replaces the quant section, and with it the base's quant.* overrides.
        load_recipe("demo", [o] if o.startswith("quant=") else [*base, o])  # BadInput if it does not apply


def test_torch_and_training_kinds_match_the_kind_modules():
    """The kinds QAT is offered for are those that provide torch_model and samples.train."""
    import inspect
    import sys

    from qcompile.kinds import kinds
    from qcompile.report.next_steps import TORCH_MODELS, TRAIN_DATA

    def source(cls):
        return inspect.getsource(sys.modules[cls.__module__])

    assert {k for k, c in kinds("model").items() if "provide_torch_model(" in source(c)} == TORCH_MODELS
    assert {k for k, c in kinds("data").items() if '("train", ' in source(c)} == TRAIN_DATA


# ---------------------------------------------------------------- a real failing build
@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """The failing demo built once through the CLI: (work dir, cache, process, report.json)."""
    work = tmp_path_factory.mktemp("gate")
    cache = tmp_path_factory.mktemp("gate-cache")
    proc = run_cli("build", "hydra.run.dir=failed", *FAILING, cache=cache, cwd=work)
    return work, cache, proc, json.loads((work / "failed" / "report.json").read_text())


def test_cli_gate_failure_says_what_to_do(failing):
    work, _, proc, rep = failing
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "qcompile: built" not in proc.stdout + proc.stderr
    assert rep["accuracy_drop"]["int8"] > 0.2, "a real, large drop"
    m = rep["metrics"]
    gate = (f"qcompile: gate failed: int8 top-1 accuracy {m['int8']['accuracy'] * 100:.2f}% is "
            f"{rep['accuracy_drop']['int8'] * 100:.2f} points below fp32's {m['fp32']['accuracy'] * 100:.2f}%; "
            "eval.max_accuracy_drop=0.01 allows 1.00 point")
    tail = proc.stderr[proc.stderr.index("qcompile: gate failed:"):].splitlines()
    assert tail[0] == gate
    nexts = [ln.removeprefix("  next: ") for ln in tail if ln.startswith("  next: ")]
    assert 1 <= len(nexts) <= 4 and nexts == rep["next_steps"][:len(nexts)]
    assert nexts[0].startswith("quant.calibration.percentile=99.99 — percentile 50 clips")
    shown = _overrides(nexts)
    assert "quant.calibration.method=minmax" in shown
    assert "quant.per_channel=true" not in shown and "quant.calibration.method=percentile" not in shown
    assert tail[-1].startswith(f"  report: {'failed/report.md'}") and "not for deployment" in tail[-1]
    assert len(tail) <= 6, "stderr stays a few lines"
    # No misleading interval note: the whole interval lies far above the limit.
    assert "known only" not in proc.stderr and not any("interval" in n for n in rep["notes"])


def test_report_and_folder_say_not_deployable(failing):
    work, _, _, rep = failing
    out = work / "failed"
    assert rep["deployable"] is False and rep["status"] == "gate_failed"
    assert [g["step"] for g in rep["gates"]] == ["compare.int8"]
    md = (out / "report.md").read_text()
    first = next(ln for ln in md.splitlines() if ln.startswith("## "))
    assert first == "## NOT DEPLOYABLE: gate failed"
    section = md.split(first, 1)[1].split("\n## ", 1)[0]
    assert rep["gates"][0]["message"] in section and "`quant.calibration.percentile=99.99`" in section
    assert "artifacts/bundle.zip" in section
    # The bundle keeps its name and bytes (the lockfile's); a notice beside it says it failed.
    assert (out / "artifacts" / "bundle.zip").is_file()
    notice = (out / "artifacts" / "GATE_FAILED.txt").read_text()
    assert notice.startswith("NOT DEPLOYABLE") and rep["gates"][0]["message"] in notice
    assert all(s in notice for s in rep["next_steps"])


def test_library_gate_failed_carries_next_steps(failing, tmp_path, monkeypatch):
    import qcompile
    from qcompile import GateFailed
    from qcompile.run.progress import Reporter

    _, cache, _, _ = failing
    monkeypatch.setenv("QCOMPILE_CACHE_DIR", str(cache))
    with pytest.raises(GateFailed) as e:
        qcompile.build(qcompile.load_recipe("demo", FAILING), tmp_path / "lib", reporter=Reporter(quiet=True))
    on_disk = json.loads((tmp_path / "lib" / "report.json").read_text())
    assert e.value.out_dir == tmp_path / "lib" and e.value.build_id == on_disk["build_id"]
    assert e.value.report == on_disk and on_disk["deployable"] is False
    assert e.value.next_steps == on_disk["next_steps"] and e.value.next_steps
    assert str(e.value) == on_disk["gates"][0]["message"]
    assert re.search(r"top-1 accuracy \d+\.\d\d% is \d+\.\d\d points below", str(e.value))

    # The suggested fix, with a generous gate: deployable, and nothing says otherwise.
    fixed = qcompile.build(qcompile.load_recipe("demo", [*FAILING, "quant.calibration.percentile=99.99",
                                                         "eval.max_accuracy_drop=0.5"]),
                           tmp_path / "fixed", reporter=Reporter(quiet=True))
    assert fixed.report["deployable"] is True and fixed.report["next_steps"] == []
    assert not (tmp_path / "fixed" / "artifacts" / "GATE_FAILED.txt").exists()
    assert "NOT DEPLOYABLE" not in (tmp_path / "fixed" / "report.md").read_text()


def test_x86_without_vnni_suggests_seven_bit_weights():
    from qcompile.report.next_steps import next_steps

    report = {**FAILED, "target": {"kind": "ort_cpu", "isa": "avx2", "activation_type": "uint8"}}
    assert "quant.reduce_range=true" in _overrides(next_steps(_recipe(reduce_range=False), report))
    vnni = {**report, "target": {**report["target"], "isa": "avx512_vnni"}}
    assert "quant.reduce_range=true" not in _overrides(next_steps(_recipe(reduce_range=False), vnni))
    assert "quant.reduce_range=true" not in _overrides(next_steps(_recipe(reduce_range=True), report))
