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
    recipes = {"qcompile/" + p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
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
