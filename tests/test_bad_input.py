"""Bad input through the CLI: exit 2, one short message naming the key or file, no traceback, empty cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import cache_entries, export_tiny_onnx, run_cli

_export_tiny_onnx = export_tiny_onnx  # older tests import it from here


def write_user_recipes(tmp_path, data: str, recipe: str):
    """``tmp_path/recipes``: recipe ``mine`` with an ONNX-file model group (``tmp_path/model.onnx``) and an npz
    data group (``tmp_path/data.npz``); ``data`` and ``recipe`` are YAML lines added to the data group and recipe."""
    d = tmp_path / "recipes"
    (d / "model").mkdir(parents=True)
    (d / "data").mkdir()
    (d / "model" / "my_onnx.yaml").write_text(f"kind: onnx\npath: {tmp_path}/model.onnx\ninput_shape: [1, 28, 28]\n")
    (d / "data" / "my_npz.yaml").write_text(f"kind: npz\npath: {tmp_path}/data.npz\n{data}")
    (d / "mine.yaml").write_text(
        "defaults: [base, {model: my_onnx}, {data: my_npz}, {quant: int8_static}, {target: ort_cpu}, _self_]\n"
        f"name: mine\nquant: {{calibration: {{samples: 8, batch_size: 4}}}}\n{recipe}")
    return d


@pytest.fixture
def user_recipes(tmp_path):
    """A user's recipe folder with an ONNX-file model group and an npz data group."""
    return write_user_recipes(tmp_path, "y_key: null\neval_samples: 4\n", "eval: {max_accuracy_drop: null}\n")


def _assert_bad_input(proc, *fragments, cache):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr
    assert cache_entries(cache) == [], "a rejected build leaves nothing in the cache"
    assert not list((cache / "tmp").glob("run-*")) if (cache / "tmp").exists() else True


@pytest.mark.parametrize("args, fragments", [
    (["+model.foo=1"], ["model.foo", "unknown key"]),
    (["quant.calibration.samples=lots"], ["quant.calibration.samples"]),
    (["quant.calibration.samples=4500"], ["quant.calibration.samples", "4000"]),
    (["quant.calibration.batch_size=0"], ["quant.calibration.batch_size"]),
    (["quant.op_types=[Conv,Foo]"], ["quant.op_types", "Foo"]),
    (["model=resnet50", "model.name=resnet5", "data=synthetic"], ["model.name", "resnet50"]),
    (["model=resnet18", "model.weights=missing.pt", "data=synthetic"], ["model.weights", "missing.pt"]),
    (["model=resnet51"], ["resnet51"]),
    (["quant.nonexistent=1"], ["nonexistent"]),
    # A typo for a count: refused at plan time, before a 109 PiB allocation.
    (["model=resnet18", "model.input_shape=[3,32,32]", "data=synthetic", "data.eval_samples=10000000000000",
      "eval.max_accuracy_drop=null"], ["data.eval_samples", "more than half of this machine's"]),
])
def test_bad_recipe(args, fragments, cache_dir, tmp_path):
    proc = run_cli("build", *args, cache=cache_dir, cwd=tmp_path)
    _assert_bad_input(proc, *fragments, cache=cache_dir)
    assert not (tmp_path / "qcompile-out").exists() or not any((tmp_path / "qcompile-out").rglob("report.json"))


def test_corrupt_onnx_file(user_recipes, cache_dir, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07this is not a protobuf at all" * 10)
    np.savez(tmp_path / "data.npz", x=np.zeros((20, 1, 28, 28), np.float32))
    proc = run_cli("build", "--config-dir", str(user_recipes), "--config-name", "mine", cache=cache_dir, cwd=tmp_path)
    _assert_bad_input(proc, "model.path", "model.onnx", "not a valid ONNX model", cache=cache_dir)


@pytest.mark.parametrize("n, key", [(0, "holds no samples"), (6, "quant.calibration.samples")])
def test_empty_or_too_small_calibration_data(n, key, user_recipes, cache_dir, tmp_path):
    export_tiny_onnx(tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=np.zeros((n, 1, 28, 28), np.float32))
    proc = run_cli("build", "--config-dir", str(user_recipes), "--config-name", "mine", cache=cache_dir, cwd=tmp_path)
    _assert_bad_input(proc, key, cache=cache_dir)


def test_state_dict_that_does_not_fit(cache_dir, tmp_path):
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pt")
    proc = run_cli("build", "model=resnet18", "model.weights=r18.pt", "data=synthetic", "eval.max_accuracy_drop=null",
                   cache=cache_dir, cwd=tmp_path)
    _assert_bad_input(proc, "model.weights", "does not fit", "fc.weight", cache=cache_dir)


def test_weights_file_holding_nan_names_the_tensor(cache_dir, tmp_path):
    import torch
    import torchvision

    state = torchvision.models.resnet18(num_classes=10).state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    proc = run_cli("build", "model=resnet18", "model.input_shape=[3,32,32]", "model.num_classes=10",
                   "model.weights=nan.pt", "data=synthetic", "eval.max_accuracy_drop=null", cache=cache_dir,
                   cwd=tmp_path)
    _assert_bad_input(proc, "model.weights", "NaN or infinite values in conv1.weight", cache=cache_dir)


def test_weights_file_that_is_not_a_state_dict(cache_dir, tmp_path):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    proc = run_cli("build", "model=resnet18", "model.weights=junk.pt", "data=synthetic", "eval.max_accuracy_drop=null",
                   cache=cache_dir, cwd=tmp_path)
    _assert_bad_input(proc, "model.weights", "junk.pt", cache=cache_dir)


def test_unknown_exclude_node_names_the_key(cache_dir, tmp_path, user_recipes):
    export_tiny_onnx(tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).standard_normal((20, 1, 28, 28)).astype(np.float32))
    proc = run_cli("build", "--config-dir", str(user_recipes), "--config-name", "mine",
                   "quant.exclude.names=[no_such_node]", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "quant.exclude.names" in proc.stderr and "Traceback" not in proc.stderr
    assert cache_entries(cache_dir) == [], "refused at plan time: nothing ran"


def test_onnx_with_fixed_batch(user_recipes, cache_dir, tmp_path):
    """A user's ONNX fixed at batch 1 builds (evaluation and calibration batch by 1); batch 8 is refused."""
    export_tiny_onnx(tmp_path / "model.onnx", batch=1)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((20, 1, 28, 28)).astype(np.float32),
             y=rng.integers(0, 10, 20))
    args = ["--config-dir", str(user_recipes), "--config-name", "mine", "data.y_key=y", "eval.max_accuracy_drop=1"]
    ok = run_cli("build", *args, "bench.batch_sizes=[1]", "hydra.run.dir=ok", cache=cache_dir, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((tmp_path / "ok" / "report.json").read_text())["eval_samples"] == 4
    bad = run_cli("build", *args, "bench.batch_sizes=[1,8]", cache=cache_dir, cwd=tmp_path)
    assert bad.returncode == 2 and "bench.batch_sizes" in bad.stderr and "fixed at 1" in bad.stderr


def test_onnx_input_shape_must_match(user_recipes, cache_dir, tmp_path):
    export_tiny_onnx(tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=np.zeros((20, 3, 28, 28), np.float32))
    proc = run_cli("build", "--config-dir", str(user_recipes), "--config-name", "mine", "model.input_shape=[3,28,28]",
                   cache=cache_dir, cwd=tmp_path)
    _assert_bad_input(proc, "model.input_shape", "[1, 28, 28]", cache=cache_dir)
