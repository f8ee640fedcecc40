"""What qcompile guarantees, probed as users and operators would: bad recipes and files are named (exit 2, one
line, no traceback, nothing in the cache), data changed in place is never a stale hit, a build never loses or
replaces a user's files, gates never vanish, lockfiles and bundles are verified, faults of the machine are named.

Each case asserts the exit code, the message naming the key or file, no traceback, the cache left as promised,
and (where it matters) that the next good build succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import cache_entries, export_tiny_onnx, run_cli, wait_for_a_step_after_the_first


def bad(proc, *fragments, cache: Path | None = None, code: int = 2) -> None:
    """Exit ``code``, every fragment in stderr, no traceback, and (given a cache) nothing cached."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for f in fragments:
        assert f in proc.stderr, (f, proc.stderr[-3000:])
    if cache is not None:
        assert cache_entries(cache) == [], "a rejected build leaves nothing in the cache"


def tiny_recipes(tmp_path: Path, y: np.ndarray | None = None, n: int = 40, y_key: str | None = "y") -> list[str]:
    """A user's recipe folder for a fast real build: a tiny ONNX classifier and an npz of samples."""
    d = tmp_path / "recipes"
    (d / "model").mkdir(parents=True, exist_ok=True)
    (d / "data").mkdir(exist_ok=True)
    if not (tmp_path / "model.onnx").exists():
        export_tiny_onnx(tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((n, 1, 28, 28)).astype(np.float32)}
    if y is not None:
        arrays["y"] = y
    np.savez(tmp_path / "data.npz", **arrays)
    (d / "model" / "tiny.yaml").write_text(f"kind: onnx\npath: {tmp_path}/model.onnx\n")
    (d / "data" / "tiny.yaml").write_text(f"kind: npz\npath: {tmp_path}/data.npz\ny_key: {y_key or 'null'}\n"
                                          "eval_samples: 16\n")
    gate = "{max_accuracy_drop: 1.0}" if y_key else "{max_accuracy_drop: null}"
    (d / "tiny.yaml").write_text(
        "defaults: [base, {model: tiny}, {data: tiny}, {quant: int8_static}, {target: ort_cpu}, _self_]\n"
        f"name: tiny\nquant: {{calibration: {{samples: 16, batch_size: 8}}}}\neval: {gate}\n"
        "bench: {batch_sizes: [1], warmup: 1, iterations: 3}\n")
    return ["--config-dir", str(d), "--config-name", "tiny"]


def labels(n: int = 40) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 10, n)


def report(path: Path) -> dict:
    return json.loads((path / "report.json").read_text())


# ---------------------------------------------------------------- recipe files and overrides
@pytest.mark.parametrize("verb", ["build", "plan"])
@pytest.mark.parametrize("content, fragment", [
    (b"defaults: [base\nname: [unclosed\n", "invalid YAML at line"),
    (b"42\n", "must be a mapping"),
    (b"name: caf\xe9\n", "not UTF-8"),
])
def test_broken_recipe_file_is_named(verb, content, fragment, cache_dir, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "mine.yaml").write_bytes(content)
    proc = run_cli(verb, "--config-dir", str(tmp_path / "r"), "--config-name", "mine", cache=cache_dir, cwd=tmp_path)
    bad(proc, "mine.yaml", fragment, cache=cache_dir)


@pytest.mark.parametrize("override, key", [
    ("model.train.lr=1e400", "model.train.lr"),
    ("quant.calibration.percentile=nan", "quant.calibration.percentile"),
    ("model.normalize.std=[0]", "model.normalize.std[0]"),
    ("eval.min_cosine=inf", "eval.min_cosine"),
])
def test_non_finite_numbers_are_refused(override, key, cache_dir, tmp_path):
    bad(run_cli("build", override, cache=cache_dir, cwd=tmp_path), key, cache=cache_dir)


def test_accuracy_gate_without_labels_is_bad_input(cache_dir, tmp_path):
    proc = run_cli("plan", "model=resnet18", "data=synthetic", cache=cache_dir, cwd=tmp_path)
    bad(proc, "eval.max_accuracy_drop", "no labels", cache=cache_dir)


def test_launcher_without_its_extra_names_the_extra(cache_dir, tmp_path):
    proc = run_cli("build", "-m", "hydra/launcher=ray_cluster", "quant.per_channel=true,false",
                   cache=cache_dir, cwd=tmp_path)
    bad(proc, "hydra/launcher=ray_cluster", "qcompile[ray]", cache=cache_dir)


# ---------------------------------------------------------------- user files
def test_label_key_missing_from_npz_names_it(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path, y=None)
    bad(run_cli("build", *args, cache=cache_dir, cwd=tmp_path), "data.y_key", "no labels 'y'", cache=cache_dir)


def test_labels_outside_the_model_classes(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path, y=labels() + 10)
    bad(run_cli("build", *args, cache=cache_dir, cwd=tmp_path), "data.y_key", "10 classes", cache=cache_dir)


def test_object_array_npz(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    np.savez(tmp_path / "data.npz", x=np.array([object()] * 40, dtype=object), y=labels())
    bad(run_cli("build", *args, cache=cache_dir, cwd=tmp_path), "data.path", "data.npz", cache=cache_dir)


def test_nan_samples(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    x = np.zeros((40, 1, 28, 28), np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "data.npz", x=x, y=labels())
    bad(run_cli("build", *args, cache=cache_dir, cwd=tmp_path), "data.path", "finite", cache=cache_dir)


def test_data_rewritten_in_place_with_its_old_mtime_is_not_a_stale_hit(cache_dir, tmp_path):
    """Same size, same mtime (restored with os.utime), other content: the stamp's ctime still changes."""
    args = tiny_recipes(tmp_path, y=labels())
    first = run_cli("build", *args, "hydra.run.dir=a", cache=cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    path = tmp_path / "data.npz"
    before = path.stat()
    with np.load(path) as f:
        x, y = f["x"], f["y"]
    np.savez(path, x=-x, y=y)  # same shapes and dtypes: the same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    second = run_cli("build", *args, "hydra.run.dir=b", cache=cache_dir, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    status = {s["name"]: s["status"] for s in report(tmp_path / "b")["steps"]}
    assert status["data"] == "ran" and status["calibrate"] == "ran"
    a, b = report(tmp_path / "a"), report(tmp_path / "b")
    calib = {r["build_id"]: next(x["sha256"] for x in r["artifacts"] if x["path"].endswith("calibration.json"))
             for r in (a, b)}
    assert len(set(calib.values())) == 2, "new data, new calibration ranges"


def test_onnx_external_data_is_part_of_the_key(cache_dir, tmp_path):
    """A retrained model saved with external weights: the .onnx is byte-identical, only model.onnx.data changed."""
    export_tiny_onnx(tmp_path / "model.onnx", external_data=True, seed=0)
    graph_bytes = (tmp_path / "model.onnx").read_bytes()
    args = tiny_recipes(tmp_path, y=labels())
    first = run_cli("build", *args, "hydra.run.dir=a", cache=cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (tmp_path / "retrained").mkdir()
    export_tiny_onnx(tmp_path / "retrained" / "model.onnx", external_data=True, seed=1)
    (tmp_path / "model.onnx.data").write_bytes((tmp_path / "retrained" / "model.onnx.data").read_bytes())
    assert (tmp_path / "model.onnx").read_bytes() == graph_bytes
    second = run_cli("build", *args, "hydra.run.dir=b", cache=cache_dir, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    status = {s["name"]: s["status"] for s in report(tmp_path / "b")["steps"]}
    assert status["model"] == "ran" and status["evaluate.fp32"] == "ran"
    digest = {d: next(x["sha256"] for x in report(tmp_path / d)["artifacts"] if x["path"].endswith("fp32.onnx"))
              for d in ("a", "b")}
    assert digest["a"] != digest["b"], "the new weights are shipped"


def test_onnx_external_data_file_missing(cache_dir, tmp_path):
    export_tiny_onnx(tmp_path / "model.onnx", external_data=True)
    args = tiny_recipes(tmp_path, y=labels())
    (tmp_path / "model.onnx.data").unlink()
    bad(run_cli("build", *args, cache=cache_dir, cwd=tmp_path), "model.path", "model.onnx.data", cache=cache_dir)


def test_model_that_cannot_take_the_input_size(cache_dir, tmp_path):
    """AlexNet's feature stack cannot shrink 32x32 images: the user's shapes, not a qcompile bug."""
    proc = run_cli("build", "model=resnet18", "model.name=alexnet", "model.input_shape=[3,32,32]",
                   "model.num_classes=10", "data=synthetic", "eval.max_accuracy_drop=null", cache=cache_dir,
                   cwd=tmp_path)
    bad(proc, "model.input_shape", "cannot run on inputs", cache=cache_dir)


# ---------------------------------------------------------------- run directories
def test_second_build_into_a_claimed_folder_changes_nothing(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    first = run_cli("build", *args, "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    again = run_cli("build", *args, "quant.per_channel=false", "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    bad(again, "already holds a build")
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before, \
        "not even .hydra/ is rewritten"


def test_a_failed_build_never_deletes_a_users_files(cache_dir, tmp_path):
    mine = tmp_path / "mine"
    (mine / ".hydra").mkdir(parents=True)
    (mine / "notes.log").write_text("my notes")
    (mine / ".hydra" / "keep.txt").write_text("mine too")
    proc = run_cli("build", "quant.calibration.samples=4500", f"hydra.run.dir={mine}", cache=cache_dir, cwd=tmp_path)
    bad(proc, "quant.calibration.samples", cache=cache_dir)
    assert (mine / "notes.log").read_text() == "my notes" and (mine / ".hydra" / "keep.txt").exists()


def test_a_failed_build_removes_the_folder_it_made(cache_dir, tmp_path):
    proc = run_cli("build", "quant.calibration.samples=4500", "hydra.run.dir=fresh", cache=cache_dir, cwd=tmp_path)
    bad(proc, "quant.calibration.samples", cache=cache_dir)
    assert not (tmp_path / "fresh").exists()


# ---------------------------------------------------------------- lockfiles and bundles
@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """One tiny build with its own cache, shared by the lockfile and bundle cases."""
    tmp = tmp_path_factory.mktemp("tiny")
    cache = tmp / "cache"
    args = tiny_recipes(tmp, y=labels())
    proc = run_cli("build", *args, "hydra.run.dir=out", cache=cache, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp, cache


@pytest.mark.parametrize("damage, fragment", [
    (lambda lock: lock.update(build_id="0" * 16), "does not match its build_id"),
    (lambda lock: lock["nodes"]["calibrate"]["outputs"].update(ranges="f" * 64), "does not match its build_id"),
    (lambda lock: lock.update(nodes=[1, 2]), "no valid 'nodes'"),
    (lambda lock: lock.update(lock_version=1), "lockfile version 1 is not supported"),
])
def test_damaged_lockfile_is_bad_input(damage, fragment, tiny_build, tmp_path):
    tmp, cache = tiny_build
    lock = json.loads((tmp / "out" / "qcompile.lock.json").read_text())
    damage(lock)
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    proc = run_cli("reproduce", str(tmp_path / "lock.json"), cache=cache, cwd=tmp_path)
    bad(proc, "lock.json", fragment)


def test_lockfile_records_the_qcompile_version(tiny_build):
    tmp, _ = tiny_build
    from qcompile import __version__

    assert json.loads((tmp / "out" / "qcompile.lock.json").read_text())["qcompile"] == __version__


def test_altered_bundle_is_refused_by_its_runner(tiny_build, tmp_path):
    tmp, _ = tiny_build
    zipfile.ZipFile(tmp / "out" / "artifacts" / "bundle.zip").extractall(tmp_path / "b")
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 28, 28), np.float32))
    ok = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), str(tmp_path / "x.npy")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    spec = json.loads((tmp_path / "b" / "preprocess.json").read_text())
    (tmp_path / "b" / "preprocess.json").write_text(json.dumps({**spec, "normalize": None}))
    proc = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), str(tmp_path / "x.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "preprocess.json does not match manifest.json" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- faults of the machine
def test_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / "cachefile").write_text("not a folder")
    args = tiny_recipes(tmp_path, y=labels())
    proc = run_cli("build", *args, cache=tmp_path / "cachefile", cwd=tmp_path)
    bad(proc, "cachefile")


def _mount(tmp_path: Path, name: str, options: str) -> Path:
    target = tmp_path / name
    target.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    return target


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_read_only_cache(tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    ro = _mount(tmp_path, "ro", "size=4m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        bad(run_cli("build", *args, cache=ro / "cache", cwd=tmp_path), "read-only file system", "QCOMPILE_CACHE_DIR")
    finally:
        _umount(ro)


def test_full_disk_leaves_no_half_written_entry_and_the_next_build_succeeds(tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    small = _mount(tmp_path, "small", "size=200k")
    try:
        proc = run_cli("build", *args, "hydra.run.dir=full", cache=small / "cache", cwd=tmp_path)
        bad(proc, "no space left")
        for blob in (small / "cache" / "blobs").rglob("*"):
            if blob.is_file():  # whatever made it into the store is whole
                import hashlib

                assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        assert not [p for p in (small / "cache" / "tmp").rglob("blob-*")] if (small / "cache" / "tmp").exists() \
            else True
    finally:
        _umount(small)
    ok = run_cli("build", *args, "hydra.run.dir=ok", cache=tmp_path / "cache", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_sigterm_stops_like_ctrl_c(cache_dir, tmp_path):
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "qcompile", "build", "model.train.epochs=20", "hydra.run.dir=t"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_a_step_after_the_first(proc, cache_dir)  # the data step is cached and training runs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated" in err and "Traceback" not in err
    assert not list((cache_dir / "tmp").glob("run-*")), "the step in flight removed its scratch folder"


def test_readme_python_example_runs_twice(demo, shared_cache, tmp_path):
    """The README's library example, run twice in a row (each run builds into a new folder)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(shared_cache)}
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "qcompile-out" / "demo").iterdir())) == 2


def test_after_a_run_of_bad_inputs_the_next_good_build_succeeds(cache_dir, tmp_path):
    """Bad recipes, files and shapes one after another into one cache: each rejected cleanly, then a good build."""
    args = tiny_recipes(tmp_path, y=labels())
    for extra in (["quant.calibration.samples=0"], ["+quant.bogus=1"], ["data.y_key=nope"],
                  ["model.input_shape=[3,28,28]"], ["eval.min_cosine=nan"]):
        proc = run_cli("build", *args, *extra, cache=cache_dir, cwd=tmp_path)
        bad(proc, cache=cache_dir)
    ok = run_cli("build", *args, "hydra.run.dir=good", cache=cache_dir, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert {s["status"] for s in report(tmp_path / "good")["steps"]} == {"ran"}


def test_a_second_sweep_into_a_used_sweep_folder_changes_nothing(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    sweep = tmp_path / "sweep"
    first = run_cli("build", *args, "-m", "quant.per_channel=true,false", f"hydra.sweep.dir={sweep}",
                    cache=cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    again = run_cli("build", *args, "-m", "quant.format=qoperator,qdq", f"hydra.sweep.dir={sweep}",
                    cache=cache_dir, cwd=tmp_path)
    bad(again, "is claimed by another build")
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before


def test_image_data_for_an_onnx_model_needs_its_normalisation(cache_dir, tmp_path):
    """Calibration and the bundle must normalise alike: no normalisation is assumed for the data alone."""
    export_tiny_onnx(tmp_path / "model.onnx")
    proc = run_cli("plan", "model=onnx", f"model.path={tmp_path / 'model.onnx'}", "data=digits",
                   cache=cache_dir, cwd=tmp_path)
    bad(proc, "model.normalize", cache=cache_dir)
    ok = run_cli("plan", "model=onnx", f"model.path={tmp_path / 'model.onnx'}", "data=digits",
                 "+model.normalize={scale: 0.00392156862745098, mean: [0.1307], std: [0.3081]}",
                 cache=cache_dir, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]


@pytest.mark.parametrize("args, key", [
    (["data=npz", "data.path=PATH", "data.y_key="], "data.y_key"),
    (["cache", "gc", "--max-size", "5GBs"], "--max-size"),
])
def test_empty_label_key_and_bad_size_are_named(args, key, cache_dir, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 28, 28), np.float32))
    args = [a.replace("PATH", str(tmp_path / "d.npz")) for a in args]
    proc = run_cli(*(args if args[0] == "cache" else ["plan", *args]), cache=cache_dir, cwd=tmp_path)
    bad(proc, key)


def test_claim_refuses_a_finished_build_even_in_the_process_that_made_it(tmp_path):
    from qcompile.builds.rundir import claim
    from qcompile.errors import BadInput

    claim(tmp_path / "out")
    claim(tmp_path / "out")  # the same build claiming again (the Hydra callback, then build()) is fine
    (tmp_path / "out" / "report.json").write_text("{}")
    with pytest.raises(BadInput, match="already holds a build"):
        claim(tmp_path / "out")
