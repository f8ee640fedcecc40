"""``qcompile run BUNDLE IMAGE...`` and the bundle's standalone run.py (issue #9): manifest digests verified (exit 2
naming the file), the bundle's preprocessing contract applied, top-k printed with class names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import export_tiny_onnx, run_cli

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}  # ImageNet 281..285


@pytest.fixture
def tiny_bundle(tmp_path):
    """A real bundle of a tiny ONNX classifier over (1, 28, 28) grey images, with class names and a contract."""
    from qcompile.bundle.layout import write_bundle
    from qcompile.signature import image_classifier

    export_tiny_onnx(tmp_path / "model.onnx")
    contract = {"resize": 32, "crop": [28, 28], "interpolation": "bicubic", "color": "L", "layout": "NCHW",
                "normalize": {"scale": 1 / 255, "mean": [0.5], "std": [0.25]}}
    bundle = tmp_path / "bundle.zip"
    write_bundle(bundle, (tmp_path / "model.onnx").read_bytes(), image_classifier((1, 28, 28), 10), contract,
                 [f"digit {i}" for i in range(10)], {"variant": "fp32"}, {"providers": ["CPUExecutionProvider"]})
    return bundle


@pytest.fixture
def photo(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (60, 40), (200, 30, 90)).save(path)
    return path


def test_run_prints_top_k_with_class_names_as_run_py_does(tiny_bundle, photo, tmp_path):
    """The library (qcompile run) and the shipped run.py print the same lines for the same bundle and image."""
    from qcompile.bundle.run_bundle import run_bundle

    lines = run_bundle(tiny_bundle, [str(photo)], top=3)
    assert len(lines) == 1 and lines[0].startswith(f"{photo}: digit ") and lines[0].count("digit") == 3
    zipfile.ZipFile(tiny_bundle).extractall(tmp_path / "b")
    proc = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), "--top", "3", str(photo)],
                          capture_output=True, text=True, cwd=tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == lines
    spec = json.loads((tmp_path / "b" / "preprocess.json").read_text())
    for key in ("layout", "input_shape"):
        assert key in spec
    assert set(spec["normalize"]) == {"scale", "mean", "std"} and spec["resize"] == 32 and spec["color"] == "L"


def test_the_runner_and_contract_need_only_numpy_pillow_onnxruntime():
    """run.py and preprocess.py ship alone in the bundle: no qcompile, no torch."""
    import qcompile.bundle as b

    allowed = {"numpy", "PIL", "onnxruntime", "__future__", "argparse", "json", "sys", "pathlib", "hashlib",
               "importlib", "typing"}
    for name in ("runner.py", "preprocess.py"):
        tree = ast.parse((Path(b.__file__).parent / name).read_text())
        mods = {(n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
        assert mods <= allowed, (name, mods - allowed)


def test_altered_bundle_and_bad_image_are_exit_2_naming_the_file(tiny_bundle, photo, cache_dir, tmp_path):
    """A bundle whose file differs from the manifest, or an image that cannot be decoded: exit 2, one line."""
    zipfile.ZipFile(tiny_bundle).extractall(tmp_path / "b")
    (tmp_path / "b" / "preprocess.py").write_text((tmp_path / "b" / "preprocess.py").read_text() + "\n# edited\n")
    proc = run_cli("run", str(tmp_path / "b"), str(photo), cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "preprocess.py does not match manifest.json" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    proc = run_cli("run", str(tiny_bundle), str(tmp_path / "bad.jpg"), cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "bad.jpg cannot be read as an image" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_efficientnet_lite0_on_chelsea_is_a_cat_for_fp32_and_int8(cache_dir, tmp_path):
    """The packaged recipe from a fresh clone (with its extras): INT8 static on the photos, and its FP32 twin;
    `qcompile run` of either bundle on chelsea's photo puts a cat class first."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="the efficientnet extra is not installed")
    pytest.importorskip("skimage", reason="the images extra is not installed")
    from PIL import Image
    from skimage.data import chelsea

    Image.fromarray(chelsea()).save(tmp_path / "chelsea.png")
    fast = ["bench.batch_sizes=[1]", "bench.warmup=1", "bench.iterations=5", "bench.max_seconds=0.5"]
    runs = {"int8": [], "fp32": ["quant=none", "~quant.calibration"]}
    for variant, extra in runs.items():
        proc = run_cli("build", "--config-name", "efficientnet_lite0_photos", *extra, *fast,
                       f"hydra.run.dir={variant}", cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads((tmp_path / variant / "report.json").read_text())
        assert report["metrics"]["fp32"]["accuracy"] is not None
        out = run_cli("run", str(tmp_path / variant / "artifacts" / "bundle.zip"), str(tmp_path / "chelsea.png"),
                      cache=cache_dir, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        first = out.stdout.split(": ", 1)[1].split(" (")[0]
        assert first in CAT_CLASSES, (variant, out.stdout)


def test_run_py_help_is_help(tiny_bundle, tmp_path):
    """`python run.py --help` prints how to use it (exit 0), never "--help cannot be read as an image"."""
    with zipfile.ZipFile(tiny_bundle) as z:
        z.extractall(tmp_path / "b")
    proc = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: run.py"), proc.stderr
    assert "--top" in proc.stdout and "image" not in proc.stderr
