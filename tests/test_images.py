"""Image data (issue #9): the preprocessing contract against torchvision on real photos, image folders with labels
from sub-folders or a labels file, the packaged photos, and the bad inputs of each (exit 2, nothing cached)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from .conftest import cache_entries, export_tiny_onnx, run_cli

skimage = pytest.importorskip("skimage", reason="the images extra (scikit-image) is not installed")

PHOTOS = ("chelsea", "coffee", "astronaut", "camera", "rocket")


def _photo(name):
    from qcompile.steps.images import photo

    return photo(name)


@pytest.mark.parametrize("weights", ["ResNet50_Weights.IMAGENET1K_V2", "EfficientNet_B1_Weights.IMAGENET1K_V2",
                                     "EfficientNet_B0_Weights.IMAGENET1K_V1", "Inception_V3_Weights.IMAGENET1K_V1",
                                     "ViT_B_16_Weights.IMAGENET1K_V1"])
def test_preprocessing_matches_torchvision_on_real_photos(weights):
    """The contract module (numpy + Pillow) equals torchvision's own transform of the weights, on PIL photos."""
    import torchvision.models as tvm

    from qcompile.bundle.preprocess import preprocess_image
    from qcompile.kinds.model._torchvision_weights import WEIGHTS

    enum, name = weights.split(".")
    w = getattr(tvm, enum)[name]
    t = w.transforms()
    model = next(m for m, n in WEIGHTS if n == name and WEIGHTS[(m, n)][0] == w.url.rsplit("/", 1)[1])
    _, resize, crop, interp, mean, std = WEIGHTS[(model, name)]
    spec = {"input_shape": [3, crop, crop], "resize": resize, "crop": [crop, crop], "interpolation": interp,
            "color": "RGB", "normalize": {"scale": 1 / 255, "mean": list(mean), "std": list(std)}}
    for photo in PHOTOS:
        img = _photo(photo).convert("RGB")
        ours, theirs = preprocess_image(img, spec), t(img).numpy()
        assert ours.shape == theirs.shape == (3, crop, crop)
        assert float(np.abs(ours - theirs).max()) <= 1e-5, (weights, photo)


def test_contract_colour_order_and_straight_resize():
    """BGR reverses the channels; without resize and crop the image goes straight to the input size."""
    from qcompile.bundle.preprocess import preprocess_image

    img = _photo("coffee")
    base = {"input_shape": [3, 32, 48], "normalize": None}
    rgb = preprocess_image(img, {**base, "color": "RGB"})
    bgr = preprocess_image(img, {**base, "color": "BGR"})
    assert rgb.shape == (3, 32, 48) and np.array_equal(rgb[::-1], bgr)
    grey = preprocess_image(img, {"input_shape": [1, 28, 28], "normalize": {"scale": 1.0, "mean": [0], "std": [1]}})
    assert grey.shape == (1, 28, 28) and 0 <= grey.min() and grey.max() <= 255


# ---------------------------------------------------------------- image folders through the CLI
def _folder(tmp_path, classes=("3", "7"), per_class=4):
    """A folder of real photos in class sub-folders (rotated copies, so every file differs)."""
    root = tmp_path / "photos"
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            _photo(PHOTOS[k % 2]).rotate(5 * i).save(root / cls / f"img{i}.png")
    return root


def _onnx_args(tmp_path, **extra):
    """A tiny real ONNX classifier over (1, 28, 28) grey images, with its normalisation stated."""
    export_tiny_onnx(tmp_path / "model.onnx")
    args = ["model=onnx", f"model.path={tmp_path / 'model.onnx'}",
            "model.normalize={scale: 0.00392156862745098, mean: [0.5], std: [0.25]}",
            "model.preprocess={resize: 32, crop: [28, 28], interpolation: bicubic}",
            "data=image_folder", "quant=int8_dynamic", "eval.max_accuracy_drop=null",
            "bench.batch_sizes=[1]", "bench.warmup=1", "bench.iterations=3", "bench.max_seconds=0.2"]
    return args + [f"{k}={v}" for k, v in extra.items()]


def test_image_folder_builds_and_the_bundle_runs_on_a_photo(cache_dir, tmp_path):
    """A folder labelled by sub-folder builds end to end; editing one photo reruns only the data step onwards,
    touching one reruns nothing; the bundle's contract and runner reproduce the data step's samples."""
    root = _folder(tmp_path)
    args = _onnx_args(tmp_path, **{"data.path": root, "data.eval_samples": 4})
    proc = run_cli("build", *args, "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metrics"]["fp32"]["accuracy"] is not None  # labels came from the folder names

    bundle = tmp_path / "out" / "artifacts" / "bundle.zip"
    names = zipfile.ZipFile(bundle).namelist()
    assert {"preprocess.py", "run.py", "preprocess.json"} <= set(names)
    spec = json.loads(zipfile.ZipFile(bundle).read("preprocess.json"))
    assert (spec["resize"], spec["crop"], spec["interpolation"], spec["color"]) == (32, [28, 28], "bicubic", "L")
    assert spec["normalize"] == {"scale": 0.00392156862745098, "mean": [0.5], "std": [0.25]}
    run = run_cli("run", str(bundle), str(root / "3" / "img0.png"), "--top", "3", cache=cache_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("(") == 3 and "img0.png:" in run.stdout

    # touch: same bytes, newer mtime -> nothing reruns; edit: the data step and what follows rerun
    photo = root / "7" / "img1.png"
    photo.touch()
    again = run_cli("build", *args, "hydra.run.dir=out2", cache=cache_dir, cwd=tmp_path)
    steps = {s["name"]: s["status"] for s in json.loads((tmp_path / "out2" / "report.json").read_text())["steps"]}
    assert again.returncode == 0 and steps["data"] == "cached", steps
    _photo("astronaut").save(photo)
    third = run_cli("build", *args, "hydra.run.dir=out3", cache=cache_dir, cwd=tmp_path)
    steps = {s["name"]: s["status"] for s in json.loads((tmp_path / "out3" / "report.json").read_text())["steps"]}
    assert third.returncode == 0 and steps["data"] == "ran" and steps["model"] == "cached", steps


def _bad(proc, *fragments, cache):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr
    assert cache_entries(cache) == []


def test_image_folder_bad_inputs(cache_dir, tmp_path):
    """Each is exit 2 naming the key or file, with nothing in the cache."""
    root = _folder(tmp_path)
    base = _onnx_args(tmp_path, **{"data.eval_samples": 2})
    (tmp_path / "empty").mkdir()
    _bad(run_cli("build", *base, f"data.path={tmp_path / 'empty'}", cache=cache_dir, cwd=tmp_path),
         "data.path", "holds no images", cache=cache_dir)
    (root / "cat").mkdir()
    _photo("chelsea").save(root / "cat" / "x.png")
    _bad(run_cli("build", *base, f"data.path={root}", cache=cache_dir, cwd=tmp_path),
         "data.path", "'cat'", "name no class", cache=cache_dir)
    (root / "cat" / "x.png").unlink()
    (root / "cat").rmdir()
    (root / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _bad(run_cli("build", *base, f"data.path={root}", cache=cache_dir, cwd=tmp_path),
         "broken.png", "cannot be decoded", "on_bad_image=skip", cache=cache_dir)
    labels = tmp_path / "labels.csv"
    labels.write_text("3/img0.png,3\n7/img0.png,12\n")
    _bad(run_cli("build", *base, f"data.path={root}", f"data.labels={labels}", cache=cache_dir, cwd=tmp_path),
         "labels.csv line 2", "data.labels", cache=cache_dir)


def test_image_folder_for_a_model_without_image_input(cache_dir, tmp_path):
    """An image folder for a model whose input is not an image: exit 2 naming data.kind."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["out"])], "ids",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, ["batch", 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "ids.onnx"))
    root = _folder(tmp_path)
    proc = run_cli("plan", "model=onnx", f"model.path={tmp_path / 'ids.onnx'}", "model.task=embedding",
                   "data=image_folder", f"data.path={root}", cache=cache_dir, cwd=tmp_path)
    _bad(proc, "data.kind", "are images", cache=cache_dir)


def test_skipped_images_and_labels_file_and_unlabelled(tmp_path):
    """on_bad_image=skip leaves a broken file out; a labels file and an unlabelled folder plan as such."""
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe

    root = _folder(tmp_path)
    (root / "7" / "broken.jpg").write_bytes(b"not a jpeg")
    labels = tmp_path / "labels.tsv"
    labels.write_text("# file\tlabel\n3/img0.png\t3\n7/img2.png\t7\n3/img1.png\t3\n")
    args = _onnx_args(tmp_path, **{"data.path": root, "data.eval_samples": 2})
    params = compile_plan(load_recipe("demo", [*args, f"data.labels={labels}"])).node("data").params
    assert [f.name for f in params.files] == ["img0.png", "img2.png", "img1.png"] and params.labels == (3, 7, 3)
    params = compile_plan(load_recipe("demo", [*args, "data.labels=null"])).node("data").params
    assert params.labels is None and len(params.files) == 9

    from qcompile.errors import BadInput
    from qcompile.steps.images import ImageFolderDataStep

    skip = params.model_copy(update={"data": params.data.model_copy(update={"on_bad_image": "skip"})})
    assert len(ImageFolderDataStep()._good(skip)) == 8
    with pytest.raises(BadInput, match="broken.jpg"):
        ImageFolderDataStep().preflight(params)


def test_packaged_photos_plan_and_refuse_what_they_cannot_give():
    """data=photos: the labelled photos are the evaluation set; asking more calibration photos than the 17 set
    aside, or ImageNet labels for a model without 1,000 classes, is bad input naming the key."""
    from qcompile.errors import BadInput
    from qcompile.kinds.data.photos import PHOTO_LABELS, PHOTOS_UNLABELLED
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe

    assert len(PHOTOS_UNLABELLED) == 17 and PHOTO_LABELS["chelsea"] == 281
    base = ["model=resnet18", "data=photos", "quant.calibration.samples=8", "eval.max_accuracy_drop=null"]
    params = compile_plan(load_recipe("demo", base)).node("data").params
    assert params.calib_samples == 8 and params.data.labelled and params.preprocess["input_shape"] == [3, 224, 224]
    with pytest.raises(BadInput, match="quant.calibration.samples"):
        compile_plan(load_recipe("demo", [*base, "quant.calibration.samples=18"]))
    with pytest.raises(BadInput, match="data.labelled"):
        compile_plan(load_recipe("demo", [*base, "model.num_classes=10"]))
    assert not compile_plan(load_recipe("demo", [*base, "model.num_classes=10", "data.labelled=false"])
                            ).node("data").params.data.labelled


def test_packaged_photos_step_writes_labelled_eval_and_calibration(tmp_path):
    """The photos step writes the 4 labelled photos for evaluation (with their labels) and the asked number of the
    others for calibration, transformed by the contract."""
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe
    from qcompile.steps.arrays import load_samples
    from qcompile.steps.base import StepContext, get_step

    node = compile_plan(load_recipe("demo", ["model=resnet18", "data=photos", "quant.calibration.samples=3",
                                             "eval.max_accuracy_drop=null"])).node("data")
    step = get_step(node.kind)
    ctx = StepContext(inputs={}, workdir=tmp_path, outputs=dict(step.outputs))
    step.run(ctx, node.params)
    (x,), y = (lambda s: (list(s[0].values()), s[1]))(load_samples(tmp_path / "eval.npz"))
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [281, 967, 892, 759]
    calib, labels = load_samples(tmp_path / "calib.npz")
    assert calib["input"].shape == (3, 3, 224, 224) and labels is None
    from qcompile.bundle.preprocess import preprocess_image

    assert np.array_equal(x[0], preprocess_image(_photo("chelsea"), node.params.preprocess))
