"""Recipes a user writes from the command line (issue #9): every kind has a group file, and relative paths in a
recipe file resolve against that file's folder while those on the command line resolve against the working
directory."""

from __future__ import annotations

import pytest

from .conftest import export_tiny_onnx, run_cli


@pytest.fixture
def project(tmp_path):
    """A user's project: recipes/ with relative paths to files beside them, and a different working directory."""
    recipes = tmp_path / "project" / "recipes"
    (recipes / "model").mkdir(parents=True)
    (recipes / "data").mkdir()
    export_tiny_onnx(recipes / "net.onnx")
    export_tiny_onnx(recipes / "model" / "net_in_group.onnx", seed=1)
    (recipes / "data" / "photos" / "3").mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("L", (30, 30), 40 * i).save(recipes / "data" / "photos" / "3" / f"{i}.png")
    (recipes / "model" / "mine.yaml").write_text(
        "kind: onnx\npath: net_in_group.onnx\nnormalize: {scale: 0.00392156862745098, mean: [0.5], std: [0.25]}\n")
    (recipes / "data" / "mine.yaml").write_text("kind: image_folder\npath: photos\neval_samples: 2\n")
    (recipes / "top.yaml").write_text(
        "defaults: [base, {model: mine}, {data: mine}, {quant: int8_dynamic}, {target: ort_cpu}, _self_]\n"
        "name: top\nmodel: {path: net.onnx}\neval: {max_accuracy_drop: null}\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    return recipes, work


def test_relative_paths_resolve_against_the_recipe_file(project, monkeypatch):
    from qcompile.recipe.load import load_recipe

    recipes, work = project
    monkeypatch.chdir(work)
    r = load_recipe("top", [], recipes)
    assert r.model.path == recipes / "net.onnx"  # the recipe's own file wins, relative to it
    assert r.data.path == recipes / "data" / "photos"  # the group file's value, relative to the group file
    r = load_recipe("top", ["model=mine"], recipes)
    assert r.model.path == recipes / "net.onnx"
    # On the command line: relative to the working directory.
    export_tiny_onnx(work / "cli.onnx")
    assert load_recipe("top", ["model.path=cli.onnx"], recipes).model.path == work / "cli.onnx"


def test_build_from_another_folder_with_relative_paths(project, cache_dir):
    """`qcompile plan --config-dir` (a fresh process, as a user runs it) finds the files beside the recipe."""
    recipes, work = project
    proc = run_cli("plan", "--config-dir", str(recipes), "--config-name", "top", cache=cache_dir, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_switching_kinds_on_the_command_line_needs_no_yaml(tmp_path, cache_dir):
    """`model=onnx model.path=net.onnx data=image_folder data.path=photos/` works from the packaged group files."""
    from PIL import Image

    export_tiny_onnx(tmp_path / "net.onnx")
    (tmp_path / "photos").mkdir()
    for i in range(3):
        Image.new("L", (30, 30), 40 * i).save(tmp_path / "photos" / f"{i}.png")
    proc = run_cli("plan", "model=onnx", "model.path=net.onnx",
                   "model.normalize={scale: 0.00392156862745098, mean: [0.5], std: [0.25]}",
                   "data=image_folder", "data.path=photos/", "data.labels=null", "data.eval_samples=2",
                   "quant=int8_dynamic", "eval.max_accuracy_drop=null", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_deleting_a_key_works_whatever_its_value(cache_dir, tmp_path):
    """`~model.weights` deletes the key even when its value is null (Hydra alone says it does not exist); a key the
    recipe does not have is exit 2 naming it."""
    from qcompile.recipe.load import load_recipe

    assert load_recipe("demo", ["model=resnet18", "~model.weights", "data=synthetic"]).model.weights is None
    r = load_recipe("resnet50_ort_cpu", ["quant=int8_dynamic", "~quant.calibration"])
    assert r.quant.kind == "dynamic"
    proc = run_cli("build", "model=resnet18", "~model.no_such_key", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "model.no_such_key" in proc.stderr and "Traceback" not in proc.stderr
