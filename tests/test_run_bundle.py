"""``qcompile run BUNDLE IMAGE...`` and the bundle's standalone run.py (issue #9): manifest digests verified (exit 2
naming the file), the bundle's preprocessing contract applied, top-k printed with class names. A bundle is data to
``qcompile run`` (issue #19): it imports no Python from the bundle, vets what it parses, unpacks only flat names."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from .conftest import export_tiny_onnx, run_cli

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}  # ImageNet 281..285


def crafted(src: Path, dest: Path, changes: dict[str, bytes | None], manifest=None) -> Path:
    """A copy of the bundle zip ``src`` with files replaced or added (bytes) or dropped (None), and a manifest whose
    digests match them, as whoever crafts a bundle would write it; ``manifest`` may edit the manifest further."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    for name, data in changes.items():
        if data is None:
            files.pop(name, None)
        else:
            files[name] = data
    m = json.loads(files["manifest.json"])
    m["files"] = {n: hashlib.sha256(d).hexdigest() for n, d in sorted(files.items()) if n != "manifest.json"}
    files["manifest.json"] = json.dumps(manifest(m) if manifest else m).encode()
    with zipfile.ZipFile(dest, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name), data)
    return dest


def with_payload(source: bytes, marker: Path) -> bytes:
    """Python source that writes ``marker`` as soon as it is imported or run."""
    payload = f"from pathlib import Path as _P\n_P({str(marker)!r}).write_text('bundle code ran')\n".encode()
    head = b"from __future__ import annotations\n"
    assert head in source
    return source.replace(head, head + payload, 1)


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
               "importlib", "typing", "math"}
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


def test_qcompile_run_imports_no_code_from_the_bundle(tiny_bundle, photo, cache_dir, tmp_path):
    """Issue #19: a bundle whose preprocess.py and run.py write a file when imported, and whose preprocess.py would
    feed zeros, with a manifest to match. ``qcompile run`` (zip or folder) prints the honest bundle's classes and
    the file is never written; the bundle's own run.py, run by choice, does run that code."""
    marker = tmp_path / "written-by-the-bundle"
    with zipfile.ZipFile(tiny_bundle) as z:
        pre, run = z.read("preprocess.py"), z.read("run.py")
    zeros = b"\n\ndef preprocess_file(path, spec):\n    import numpy as np\n\n" \
            b"    return np.zeros(spec['input_shape'], np.float32)\n"
    evil = crafted(tiny_bundle, tmp_path / "evil.zip", {"preprocess.py": with_payload(pre, marker) + zeros,
                                                         "run.py": with_payload(run, marker)})
    honest = run_cli("run", str(tiny_bundle), str(photo), "--top", "3", cache=cache_dir, cwd=tmp_path)
    assert honest.returncode == 0 and honest.stdout.count("digit") == 3, honest.stderr
    zipfile.ZipFile(evil).extractall(tmp_path / "evil")
    for target in (evil, tmp_path / "evil"):
        proc = run_cli("run", str(target), str(photo), "--top", "3", cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == honest.stdout
        assert not marker.exists(), f"qcompile run {target.name} ran the bundle's code"
    assert not cache_dir.exists(), "qcompile run wrote to the cache"
    ran = subprocess.run([sys.executable, str(tmp_path / "evil" / "run.py"), "--top", "3", str(photo)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0 and marker.read_text() == "bundle code ran", ran.stderr


def _spec(tiny_bundle) -> dict:
    return json.loads(zipfile.ZipFile(tiny_bundle).read("preprocess.json"))


BAD_CONTRACTS = {
    "not JSON": (lambda s: b'{"layout": "NCHW",', "preprocess.json cannot be read as JSON"),
    "unknown setting": (lambda s: {**s, "sharpen": 1.5}, "preprocess.json: sharpen: not a setting"),
    "unknown interpolation": (lambda s: {**s, "interpolation": "magic"}, "preprocess.json: interpolation: 'magic'"),
    "colour for another channel count": (lambda s: {**s, "color": "RGB"}, "preprocess.json: color: 'RGB'"),
    "zero std": (lambda s: {**s, "normalize": {**s["normalize"], "std": [0]}}, "preprocess.json: normalize.std"),
    "extra normalisation op": (lambda s: {**s, "normalize": {**s["normalize"], "clip": [0, 1]}},
                               "preprocess.json: normalize: not null nor"),
    "two-axis shape": (lambda s: {**s, "input_shape": [28, 28]}, "preprocess.json: input_shape"),
    "crop as a string": (lambda s: {**s, "crop": "28x28"}, "preprocess.json: crop"),
    "object dtype": (lambda s: {**s, "inputs": [{**s["inputs"][0], "dtype": "object"}]},
                     "preprocess.json: inputs[0]"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTRACTS))
def test_a_preprocess_json_the_installed_module_cannot_apply_is_bad_input_naming_file_and_key(
        case, tiny_bundle, photo, tmp_path):
    from qcompile.bundle.run_bundle import run_bundle
    from qcompile.errors import BadInput

    edit, expected = BAD_CONTRACTS[case]
    spec = edit(_spec(tiny_bundle))
    data = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
    bad = crafted(tiny_bundle, tmp_path / "bad.zip", {"preprocess.json": data})
    with pytest.raises(BadInput) as err:
        run_bundle(bad, [str(photo)])
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_bad_contract_is_exit_2_in_one_line_for_qcompile_run_and_run_py(tiny_bundle, photo, cache_dir, tmp_path):
    bad = crafted(tiny_bundle, tmp_path / "bad.zip", {"preprocess.json": json.dumps(
        {**_spec(tiny_bundle), "interpolation": "magic"}).encode()})
    proc = run_cli("run", str(bad), str(photo), cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "preprocess.json: interpolation: 'magic'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", proc.stderr
    assert not cache_dir.exists()
    zipfile.ZipFile(bad).extractall(tmp_path / "b")
    ran = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), str(photo)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert ran.returncode == 2 and "preprocess.json: interpolation: 'magic'" in ran.stderr, ran.stderr


def test_a_zip_that_would_not_fit_on_the_disk_is_refused_before_anything_is_written(tiny_bundle, photo, tmp_path,
                                                                                    monkeypatch):
    """A zip bomb: 64 MiB of zeros is a few KiB zipped. With less free space than it declares, nothing is unpacked
    (the free space is set low rather than filling this machine's disk)."""
    import shutil
    from collections import namedtuple

    from qcompile.bundle.run_bundle import run_bundle
    from qcompile.errors import BadInput

    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    stored = crafted(tiny_bundle, tmp_path / "stored.zip", {"zeros.bin": bytes(64 << 20)})
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for name in src.namelist():
            out.writestr(name, src.read(name))
    assert bomb.stat().st_size < 1 << 20
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - (32 << 20), 32 << 20))
    with pytest.raises(BadInput, match=f"unpacks to [0-9]+ bytes, more than the {32 << 20} bytes free"):
        run_bundle(bomb, [str(photo)])
    assert sorted(p.name for p in root.rglob("*")) == [], "something was unpacked"


ESCAPES = {"parent": "../escaped.txt", "nested parent": "x/../../escaped.txt", "folder": "sub/escaped.txt",
           "absolute": "{root}/escaped.txt", "dot-dot": ".."}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_a_zip_entry_that_is_not_a_plain_name_is_bad_input_and_nothing_is_written(case, tiny_bundle, photo,
                                                                                  tmp_path, monkeypatch):
    """Entries are checked before anything is unpacked: nothing lands beside or outside the temp folder, which is
    gone afterwards. The manifest is made to match (it cannot list such a name: that is refused too)."""
    from qcompile.bundle.run_bundle import run_bundle
    from qcompile.errors import BadInput

    root = tmp_path / "temp"
    (root / "x").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(root))  # where qcompile run unpacks: escapes would land in root
    name = ESCAPES[case].format(root=root)
    bad = crafted(tiny_bundle, tmp_path / "bad.zip", {name: b"escaped"})
    with pytest.raises(BadInput, match="which no bundle holds") as err:
        run_bundle(bad, [str(photo)])
    assert repr(name) in str(err.value) and str(bad) in str(err.value)
    assert sorted(p.name for p in root.rglob("*")) == ["x"], "something was unpacked"
    assert not [p for p in tmp_path.rglob("escaped*")]


def test_a_traversing_zip_is_exit_2_via_the_cli(tiny_bundle, photo, cache_dir, tmp_path):
    bad = crafted(tiny_bundle, tmp_path / "bad.zip", {"../escaped.txt": b"escaped"})
    (tmp_path / "temp" / "deep").mkdir(parents=True)
    proc = run_cli("run", str(bad), str(photo), cache=cache_dir, cwd=tmp_path,
                   extra_env={"TMPDIR": str(tmp_path / "temp" / "deep")})
    assert proc.returncode == 2 and "'../escaped.txt', which no bundle holds" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.rglob("escaped*"))
    assert not list((tmp_path / "temp" / "deep").iterdir()) and not cache_dir.exists()


def _weights_outside(tmp_path: Path) -> bytes:
    """The tiny classifier with its weights in a file beside the bundle (``../w.bin``), not in it."""
    import onnx
    from onnx.external_data_helper import set_external_data

    export_tiny_onnx(tmp_path / "tiny.onnx")
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    w = next(t for t in model.graph.initializer if t.name == "w")
    (tmp_path / "w.bin").write_bytes(w.raw_data)
    set_external_data(w, location="../w.bin")  # onnx.save refuses such a location: written by hand
    w.ClearField("raw_data")
    return model.SerializeToString()


class _WritesWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_what_qcompile_run_reads_is_parsed_as_data(tiny_bundle, photo, tmp_path):
    """Samples are loaded without pickle (an object array that would run code when unpickled is refused), class
    names must be a list of strings, and the manifest can name no file outside the bundle nor leave out one that
    is read. Each is bad input naming the file."""
    import numpy as np

    from qcompile.bundle.run_bundle import run_bundle
    from qcompile.errors import BadInput

    marker = tmp_path / "unpickled"
    np.save(tmp_path / "samples.npy", np.array([_WritesWhenUnpickled(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="samples.npy cannot be read as arrays"):
        run_bundle(tiny_bundle, [str(tmp_path / "samples.npy")])
    assert not marker.exists()
    np.save(tmp_path / "ok.npy", np.zeros((2, 1, 28, 28), np.float32))
    assert len(run_bundle(tiny_bundle, [str(tmp_path / "ok.npy")])) == 2  # plain arrays still run

    cases = [({"labels.json": b'{"0": "zero"}'}, None, "labels.json is not a list of class names"),
             ({}, lambda m: {**m, "files": {**m["files"], "../model.onnx": m["files"]["model.onnx"]}},
              "manifest.json: files names '../model.onnx'"),
             ({}, lambda m: {**m, "model": {**m["model"], "file": "/etc/passwd"}},
              "manifest.json: model.file '/etc/passwd' is not one of its files"),
             ({}, lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "labels.json"}},
              "labels.json is not listed in manifest.json"),
             ({"model.onnx": b"not a model"}, None, "model.onnx cannot be loaded by onnxruntime"),
             ({"model.onnx": _weights_outside(tmp_path)}, None, "model.onnx cannot be loaded by onnxruntime")]
    for i, (changes, manifest, expected) in enumerate(cases):
        bad = crafted(tiny_bundle, tmp_path / f"bad{i}.zip", changes, manifest)
        with pytest.raises(BadInput) as err:
            run_bundle(bad, [str(photo)])
        assert expected in str(err.value), (i, str(err.value))
