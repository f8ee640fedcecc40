"""Portable lockfiles: a project moved or cloned elsewhere reproduces with its build id; files that are not there
are named; an edited lockfile is refused before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import cache_entries, export_tiny_onnx, run_cli

LOCK = "qcompile.lock.json"
RECIPE = """\
defaults:
  - base
  - model: onnx
  - data: npy_folder
  - quant: int8_dynamic
  - target: ort_cpu
  - _self_

name: portable
model: {path: tiny.onnx}
data: {path: samples, eval_samples: 12}
eval: {max_accuracy_drop: null}
bench: {batch_sizes: [1], iterations: 5, warmup: 1, max_seconds: 0.5}
"""


def make_project(folder: Path) -> Path:
    """A project folder with its own recipe, ONNX model and a folder of 12 .npy samples (all evaluated)."""
    rng = np.random.default_rng(0)
    for i in range(12):
        (folder / "samples" / str(i % 3)).mkdir(parents=True, exist_ok=True)
        np.save(folder / "samples" / str(i % 3) / f"s{i:02d}.npy", rng.standard_normal((1, 28, 28)).astype(np.float32))
    export_tiny_onnx(folder / "tiny.onnx")
    (folder / "recipe.yaml").write_text(RECIPE)
    return folder


def build_in(project: Path, cache: Path, *overrides: str) -> dict:
    """Build the project's recipe from inside the project into ``project/out``; its report."""
    proc = run_cli("build", "--config-dir", ".", "--config-name", "recipe", *overrides, "hydra.run.dir=out",
                   cache=cache, cwd=project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((project / "out" / "report.json").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The project built once: (project folder, its cache, report). Tests copy it before moving or editing."""
    tmp = tmp_path_factory.mktemp("portable")
    project = make_project(tmp / "proj")
    cache = tmp / "cache"
    return project, cache, build_in(project, cache)


def measured(lock: dict) -> set[str]:
    """The artifacts of the nodes outside the build id (timings, and what they feed): a rebuild may change them."""
    from qcompile.builds.lockfile import reproducible

    same = reproducible(lock["nodes"])
    return {f"artifacts/{rel}" for name, n in lock["nodes"].items() if name not in same
            for rel in n["publish"].values()}


def _copy(project: Path, dest: Path) -> Path:
    shutil.copytree(project, dest, symlinks=True)
    return dest


def _artifacts(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted((folder / "artifacts").rglob("*"))
            if p.is_file()}


def test_lockfile_records_no_absolute_project_path(built):
    project, _, rep = built
    text = (project / "out" / LOCK).read_text()
    lock = json.loads(text)
    assert str(project) not in text and str(project.parent) not in text, "project paths are relative to the root"
    assert lock["root"] == ".." and lock["recipe"]["model"]["path"] == "root://tiny.onnx"
    assert len(lock["files"]) == 13 and all(d.startswith("sha256:") for d in lock["files"].values())
    assert lock["build_id"] == rep["build_id"]


def test_a_moved_project_reproduces_byte_for_byte_with_its_build_id(built, tmp_path):
    project, cache, rep = built
    original = _copy(project, tmp_path / "home" / "proj")
    moved = Path(shutil.move(str(original), str(tmp_path / "cluster" / "node7" / "renamed")))
    assert not original.exists()
    lockfile = str(moved / "out" / LOCK)

    fresh = run_cli("reproduce", lockfile, "--out", str(tmp_path / "again"), cache=tmp_path / "empty", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stdout[-2000:] + fresh.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert {s["status"] for s in again["steps"]} == {"ran"}, "the empty cache forced a real rebuild"
    assert again["build_id"] == rep["build_id"], "an unchanged build keeps its id wherever the project lies"
    old, new = _artifacts(moved / "out"), _artifacts(tmp_path / "again")
    assert set(old) == set(new)
    # Timings made again may differ (whether they do is up to the machine); nothing else may.
    timings = measured(json.loads((moved / "out" / LOCK).read_text()))
    assert "artifacts/latency.fp32.json" in timings and {p for p in old if old[p] != new[p]} <= timings

    # The cache the project was built with: keys hold no location, so every step is a hit.
    hit = run_cli("reproduce", lockfile, "--out", str(tmp_path / "hit"), cache=cache, cwd=tmp_path)
    assert hit.returncode == 0, hit.stderr[-2000:]
    report = json.loads((tmp_path / "hit" / "report.json").read_text())
    assert {s["status"] for s in report["steps"]} == {"cached"} and report["build_id"] == rep["build_id"]
    # The new lockfile names the project where it is now.
    assert json.loads((tmp_path / "hit" / LOCK).read_text())["root"] == "../cluster/node7/renamed"


def test_a_lockfile_away_from_its_project_names_the_root_and_the_first_missing_file(built, tmp_path):
    project, cache, rep = built
    (tmp_path / "lone").mkdir()
    shutil.copy(project / "out" / LOCK, tmp_path / "lone" / LOCK)
    first = next(iter(json.loads((project / "out" / LOCK).read_text())["files"])).removeprefix("root://")
    proc = run_cli("reproduce", str(tmp_path / "lone" / LOCK), cache=tmp_path / "c", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert f"'..' relative to the lockfile, here {tmp_path}" in proc.stderr and first in proc.stderr
    assert "--root" in proc.stderr
    assert cache_entries(tmp_path / "c") == [], "nothing ran, nothing was cached"

    mapped = run_cli("reproduce", str(tmp_path / "lone" / LOCK), "--root", str(project), "--out",
                     str(tmp_path / "r"), cache=cache, cwd=tmp_path)
    assert mapped.returncode == 0, mapped.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "report.json").read_text())["build_id"] == rep["build_id"]


def test_a_file_outside_the_project_is_found_by_path_or_named_with_root(tmp_path):
    project = make_project(tmp_path / "proj")
    shared = tmp_path / "shared" / "models"
    shared.mkdir(parents=True)
    shutil.move(str(project / "tiny.onnx"), str(shared / "tiny.onnx"))
    cache = tmp_path / "cache"
    rep = build_in(project, cache, f"model.path={shared / 'tiny.onnx'}")
    lock = json.loads((project / "out" / LOCK).read_text())
    assert lock["recipe"]["model"]["path"] == str(shared / "tiny.onnx") and str(shared / "tiny.onnx") in lock["files"]

    moved = tmp_path / "mnt" / "models"
    shutil.move(str(shared), str(moved))
    proc = run_cli("reproduce", str(project / "out" / LOCK), cache=cache, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{shared / 'tiny.onnx'} is not on this machine" in proc.stderr
    assert f"--root {shared}=" in proc.stderr

    found = run_cli("reproduce", str(project / "out" / LOCK), "--root", f"{shared}={moved}", "--out",
                    str(tmp_path / "r"), cache=cache, cwd=tmp_path)
    assert found.returncode == 0, found.stderr[-2000:]
    assert "is identical" in found.stdout
    assert json.loads((tmp_path / "r" / "report.json").read_text())["build_id"] == rep["build_id"]


def test_a_changed_user_file_is_named(built, tmp_path):
    project, cache, _ = built
    copy = _copy(project, tmp_path / "proj")
    changed = copy / "samples" / "1" / "s04.npy"
    np.save(changed, np.ones((1, 28, 28), np.float32))
    proc = run_cli("reproduce", str(copy / "out" / LOCK), "--out", str(tmp_path / "r"), cache=cache, cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "first differing step is data (data.npy_folder)" in proc.stderr
    assert f"the user file {changed} changed since the build" in proc.stderr.replace("\n", "")
    assert "upstream" not in proc.stderr


@pytest.mark.parametrize("edit", [
    lambda lock: lock["nodes"]["quantize"]["params"]["quant"].update(method="foo"),
    lambda lock: lock["nodes"]["data"]["params"]["data"].update(eval_samples=6),
    lambda lock: lock["nodes"]["benchmark.fp32"]["outputs"].update(latency="0" * 64),
    lambda lock: lock["files"].update({next(iter(lock["files"])): "sha256:" + "0" * 64}),
], ids=["params", "section", "measurement", "file-digest"])
def test_an_edited_lockfile_is_bad_input_and_caches_nothing(edit, built, tmp_path):
    project, _, _ = built
    copy = _copy(project, tmp_path / "proj")
    lock = json.loads((copy / "out" / LOCK).read_text())
    build_id = lock["build_id"]
    edit(lock)
    (copy / "out" / LOCK).write_text(json.dumps(lock))
    proc = run_cli("reproduce", str(copy / "out" / LOCK), "--out", str(tmp_path / "r"), cache=tmp_path / "c",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"does not match its build_id {build_id}" in proc.stderr and "edited" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cache_entries(tmp_path / "c") == [] and not (tmp_path / "r").exists()


def test_a_lockfile_of_another_qcompile_says_so(built, tmp_path):
    project, _, _ = built
    lock = json.loads((project / "out" / LOCK).read_text())
    (tmp_path / "old.json").write_text(json.dumps({**lock, "lock_version": 2}))
    proc = run_cli("reproduce", str(tmp_path / "old.json"), cache=tmp_path / "c", cwd=tmp_path)
    assert proc.returncode == 2 and "an older qcompile wrote it" in proc.stderr and "reads version 3" in proc.stderr
    lock["nodes"]["data"]["kind"] = "data.from_the_future"
    (tmp_path / "new.json").write_text(json.dumps(lock))
    proc = run_cli("reproduce", str(tmp_path / "new.json"), cache=tmp_path / "c", cwd=tmp_path)
    assert proc.returncode == 2 and "'data' runs the step kind 'data.from_the_future'" in proc.stderr, proc.stderr


def test_keys_do_not_depend_on_where_a_factory_project_lies(tmp_path):
    """A factory model's import folder and a user metric's never enter keys; only the module file's content."""
    from qcompile.cache import Cache
    from qcompile.cache.keys import digest_json
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe
    from qcompile.run.scheduler import key_material
    from qcompile.steps.base import get_step

    source = (Path(__file__).resolve().parent.parent / "qcompile" / "examples" / "diabetes.py").read_text()
    cache = Cache(tmp_path / "cache")

    def keys(folder: Path, text: str = source) -> dict[str, str]:
        folder.mkdir(parents=True)
        (folder / "diabetes.py").write_text(text)
        roots = [f"{k}={folder}" for k in ("model.root", "data.root", "eval.metrics.r2.root", "eval.metrics.mae.root")]
        plan = compile_plan(load_recipe("diabetes_regression", roots))
        return {n.name: digest_json(key_material(n, get_step(n.kind), {s: "x" for s in n.inputs}, cache))
                for n in plan.order()}

    here = keys(tmp_path / "a")
    assert keys(tmp_path / "b" / "c") == here
    edited = keys(tmp_path / "d", source + "\n# edited\n")
    assert {n for n in here if edited[n] != here[n]} == {"data", "model", "export", "evaluate.fp32",
                                                         "evaluate.int8"}, "the module's content is keyed"


def test_a_checked_out_lockfile_still_finds_its_project(built, tmp_path):
    project, cache, rep = built
    co = run_cli("checkout", rep["build_id"], str(tmp_path / "deep" / "co"), cache=cache, cwd=tmp_path)
    assert co.returncode == 0, co.stderr
    restored = json.loads((tmp_path / "deep" / "co" / LOCK).read_text())
    assert (tmp_path / "deep" / "co" / restored["root"]).resolve() == project.resolve()
    proc = run_cli("reproduce", str(tmp_path / "deep" / "co" / LOCK), "--out", str(tmp_path / "r"), cache=cache,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "report.json").read_text())["build_id"] == rep["build_id"]
