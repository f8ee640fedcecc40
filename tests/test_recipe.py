"""Recipes compose with Hydra and validate with pydantic; mistakes name the key, once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import qcompile
from qcompile.errors import BadInput
from qcompile.recipe.schema import recipe_json_schema

from .conftest import REPO


def test_demo_recipe_composes_and_resolves_fast_defaults():
    r = qcompile.load_recipe("demo")
    assert r.model.kind == "mnist_cnn" and r.data.kind == "mnist" and r.quant.kind == "static"
    plan = qcompile.compile_plan(r)
    q = plan.node("quantize").params
    # target.isa=auto: the machine that runs the quantize step picks the type (not the planning host).
    assert q.activation_type == "host" and q.quant.weight_type == "int8" and q.quant.format == "qdq"
    assert [n.name for n in plan.order()] == [
        "data", "train", "export", "optimize", "calibrate", "quantize", "evaluate.fp32", "benchmark.fp32",
        "evaluate.int8", "benchmark.int8", "compare.int8", "speedup.int8", "package"]
    assert list(plan.variants) == ["fp32", "int8"]


@pytest.mark.parametrize("isa, activation", [("avx512_vnni", "uint8"), ("avx2", "uint8"), ("arm64", "int8")])
def test_target_isa_sets_the_activation_type(isa, activation):
    """The target owns the quant defaults: an ARM target gets int8 activations whatever host plans the build."""
    plan = qcompile.compile_plan(qcompile.load_recipe("demo", [f"target.isa={isa}"]))
    assert plan.node("quantize").params.activation_type == activation
    explicit = qcompile.compile_plan(qcompile.load_recipe("demo", [f"target.isa={isa}", "quant.activation_type=int8"]))
    assert explicit.node("quantize").params.activation_type == "int8", "an explicit choice wins"


def test_host_isa_enters_the_quantize_key_only_when_the_host_decides():
    from qcompile.cache.keys import cpu_isa
    from qcompile.steps.base import get_step

    step = get_step("quantize.ort_static")
    auto = qcompile.compile_plan(qcompile.load_recipe("demo")).node("quantize").params
    fixed = qcompile.compile_plan(qcompile.load_recipe("demo", ["target.isa=avx2"])).node("quantize").params
    assert step.host_facts(auto) == {"isa": cpu_isa()} and step.host_facts(fixed) == {}


def test_resnet50_recipe_and_overrides():
    r = qcompile.load_recipe("resnet50_ort_cpu", ["quant.per_channel=false", "bench.batch_sizes=[1,4]"])
    assert r.model.name == "resnet50" and r.quant.per_channel is False and r.bench.batch_sizes == [1, 4]


def test_user_config_dir(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny.yaml").write_text("kind: torchvision\nname: resnet18\nnum_classes: 10\n")
    (tmp_path / "mine.yaml").write_text(
        "defaults: [base, {model: tiny}, {data: synthetic}, {quant: int8_static}, {target: ort_cpu}, _self_]\n"
        "name: mine\n")
    r = qcompile.load_recipe("mine", [], config_dir=tmp_path)
    assert r.name == "mine" and r.model.num_classes == 10


@pytest.mark.parametrize("overrides, key, fragment", [
    (["+model.foo=1"], "model.foo", "unknown key"),
    (["+model.trian.epochs=3"], "model.trian", "did you mean 'train'? model.kind=mnist_cnn takes: kind, input_shape"),
    (["quant.calibration.samples=abc"], "quant.calibration.samples", "integer"),
    (["quant.calibration.batch_size=0"], "quant.calibration.batch_size", "greater than 0"),
    (["quant.calibration.samples=4500"], "quant.calibration.samples", "4000"),
    (["quant.op_types=[Conv,Convolution]"], "quant.op_types", "Convolution"),
    (["quant.format=qint8"], "quant.format", "not one of: qdq, qoperator"),
    (["data.seed=-1"], "data.seed", "greater than or equal to 0"),
    (["model=resnet50", "model.name=resnet51", "data=synthetic"], "model.name", "did you mean resnet50"),
    (["model=resnet18", "model.weights=/no/such/weights.pt", "data=synthetic"], "model.weights", "not found"),
    (["data.kind=imagenet"], "data", "mnist, npy_folder, npz, photos, synthetic"),
    (["data=synthetic"], "data.kind", "model.kind=mnist_cnn needs a training split (samples.train); "
                                      "data.kind=synthetic provides none"),
])
def test_bad_recipe_names_the_key(overrides, key, fragment):
    """Schema errors come from load_recipe; errors between sections (ports) from compile_plan."""
    with pytest.raises(BadInput) as e:
        qcompile.compile_plan(qcompile.load_recipe("demo", overrides))
    msg = str(e.value)
    assert msg.startswith(f"{key}:"), msg
    assert fragment in msg
    assert len(msg.splitlines()) == 1, f"one root cause, not a cascade: {msg}"


def test_unknown_group_option_is_bad_input():
    with pytest.raises(BadInput, match="resnet51"):
        qcompile.load_recipe("demo", ["model=resnet51"])


def test_schema_file_is_current():
    committed = json.loads((REPO / "schemas" / "recipe.schema.json").read_text())
    assert committed == recipe_json_schema(), "schemas/recipe.schema.json is stale: run `qcompile schema`"


def test_torchvision_names_match_installed_torchvision():
    import torchvision

    from qcompile.kinds.model._torchvision_names import TORCHVISION_CLASSIFIERS

    assert list(TORCHVISION_CLASSIFIERS) == torchvision.models.list_models(module=torchvision.models)


def test_planning_does_not_import_torch():
    code = ("import sys, qcompile; qcompile.compile_plan(qcompile.load_recipe('demo')); "
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("group", ["model", "data", "quant", "target"])
def test_group_files_hold_only_what_differs_from_the_defaults(group):
    """Each option is declared once, in its section with its default: a group file repeating a default would be a
    second declaration that silently disagrees the day the default changes."""
    import yaml
    from pydantic import TypeAdapter

    from qcompile.recipe.errors import pick_member
    from qcompile.recipe.schema import Recipe

    for path in sorted((REPO / "qcompile" / "recipes" / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        model = pick_member(Recipe.model_fields[group].annotation, data)
        for key, value in data.items():
            if key == "kind" or value == "???":  # the kind, and a value the user must give
                continue
            field = model.model_fields[key]
            given = TypeAdapter(field.annotation).validate_python(value)
            assert given != field.get_default(call_default_factory=True), f"{path.name}: {key} repeats its default"


def test_every_top_level_field_is_overridable():
    r = qcompile.load_recipe("demo", ["eval.max_accuracy_drop=0.05", "model.export.tolerance=0.01",
                                      "bench.iterations=7", "quant.calibration.symmetric=true"])
    assert (r.eval.max_accuracy_drop, r.model.export.tolerance, r.bench.iterations) == (0.05, 0.01, 7)


@pytest.mark.parametrize("launcher", ["parallel", "local_jobs", "slurm"])
def test_shipped_launcher_recipes_compose(launcher):
    """The launcher recipes extend the installed plugins' configs (joblib, submitit)."""
    assert qcompile.load_recipe("demo", [f"hydra/launcher={launcher}"]).name == "demo"


def test_user_files_are_recorded_as_absolute_paths(tmp_path, monkeypatch):
    (tmp_path / "w.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    r = qcompile.load_recipe("demo", ["model=resnet18", "data=synthetic", "model.weights=w.pt"])
    assert r.model.weights == tmp_path / "w.pt" and r.model.weights.is_absolute()
