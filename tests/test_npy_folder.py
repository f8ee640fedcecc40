"""data.kind=npy_folder, the kind docs/adding-a-kind.md adds: one kind module, one step module, one recipe file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from .conftest import cache_entries, run_cli

MODEL = ["model=resnet18", "model.input_shape=[3,32,32]", "model.num_classes=3"]


@pytest.fixture
def samples(tmp_path):
    """24 samples of a (3, 32, 32) input in <class index>/ sub-folders, plus a hidden file that must be ignored."""
    root = tmp_path / "samples"
    rng = np.random.default_rng(0)
    for i in range(24):
        (root / str(i % 3)).mkdir(parents=True, exist_ok=True)
        np.save(root / str(i % 3) / f"s{i:02d}.npy", rng.standard_normal((3, 32, 32)).astype(np.float32))
    (root / ".cache").mkdir()
    np.save(root / ".cache" / "stale.npy", np.zeros(1))
    return root


def _plan(*args):
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe

    return compile_plan(load_recipe("demo", [*MODEL, "data=npy_folder", "data.eval_samples=12", "quant=int8_dynamic",
                                             "eval.max_accuracy_drop=null", *args]))


def _key(plan, cache):
    from qcompile.run.scheduler import peek

    return next(o.key for o in peek(plan, cache) if o.name == "data")


def test_builds_end_to_end_with_labels_from_sub_folders(samples, cache_dir, tmp_path):
    proc = run_cli("build", *MODEL, "data=npy_folder", f"data.path={samples}", "data.eval_samples=12",
                   "quant=int8_dynamic", "eval.max_accuracy_drop=null", "bench.batch_sizes=[1]", "bench.iterations=5",
                   "bench.max_seconds=0.5", "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert next(s for s in rep["steps"] if s["name"] == "data")["kind"] == "data.npy_folder"
    assert rep["metrics"]["fp32"]["accuracy"] is not None, "labelled by their sub-folders"


def test_key_follows_the_files_content_not_the_folder(samples, tmp_path):
    from qcompile.cache import Cache

    cache = Cache(tmp_path / "cache")
    plan = _plan(f"data.path={samples}")
    params = plan.node("data").params
    assert len(params.files) == 24 and params.labels[:4] == (0, 0, 0, 0) and set(params.labels) == {0, 1, 2}
    moved = shutil.copytree(samples, tmp_path / "elsewhere")
    assert _key(_plan(f"data.path={moved}"), cache) == _key(plan, cache)
    np.save(moved / "2" / "s23.npy", np.ones((3, 32, 32), np.float32))
    assert _key(_plan(f"data.path={moved}"), cache) != _key(plan, cache)


def test_bad_folders_and_files_are_named(samples, tmp_path):
    from qcompile.builds import build
    from qcompile.cache import Cache
    from qcompile.errors import BadInput
    from qcompile.recipe.load import load_recipe

    (samples / "cat").mkdir()
    np.save(samples / "cat" / "x.npy", np.zeros((3, 32, 32), np.float32))
    with pytest.raises(BadInput, match="class index") as e:
        _plan(f"data.path={samples}")
    assert e.value.key == "data.labels"
    assert _plan(f"data.path={samples}", "data.labels=null").node("data").params.labels is None

    shutil.rmtree(samples / "cat")
    np.save(samples / "1" / "s01.npy", np.zeros((3, 16, 16), np.float32))
    cache = Cache(tmp_path / "cache")
    recipe = load_recipe("demo", [*MODEL, "data=npy_folder", f"data.path={samples}", "data.eval_samples=24",
                                  "quant=none", "eval.max_accuracy_drop=null"])
    with pytest.raises(BadInput, match=r"s01.npy holds shape \(3, 16, 16\)") as e:
        build(recipe, tmp_path / "out", cache=cache)
    assert e.value.key == "data.path" and cache_entries(tmp_path / "cache") == []
