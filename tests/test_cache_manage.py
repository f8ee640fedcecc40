"""`qcompile cache`: ls, info, verify and gc, which never drops what a kept lockfile needs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qcompile.cache import Cache, build_blobs
from qcompile.cache.manage import parse_size

from .conftest import run_cli
from .test_bad_input import _export_tiny_onnx


@pytest.fixture
def tiny(tmp_path):
    """CLI arguments of a fast real build (see ``make_tiny_recipe``)."""
    return make_tiny_recipe(tmp_path)


def make_tiny_recipe(tmp_path):
    """A fast real build: a small ONNX classifier, the user's npz samples, static INT8 on ORT CPU."""
    d = tmp_path / "recipes"
    (d / "model").mkdir(parents=True)
    (d / "data").mkdir()
    _export_tiny_onnx(tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((40, 1, 28, 28)).astype(np.float32),
             y=rng.integers(0, 10, 40))
    (d / "model" / "tiny.yaml").write_text(f"kind: onnx\npath: {tmp_path}/model.onnx\ninput_shape: [1, 28, 28]\n")
    (d / "data" / "tiny.yaml").write_text(f"kind: npz\npath: {tmp_path}/data.npz\neval_samples: 16\n")
    (d / "tiny.yaml").write_text(
        "defaults: [base, {model: tiny}, {data: tiny}, {quant: int8_static}, {target: ort_cpu}, _self_]\n"
        "name: tiny\nquant: {calibration: {samples: 16, batch_size: 8}}\neval: {max_accuracy_drop: 1.0}\n"
        "bench: {batch_sizes: [1], warmup: 1, iterations: 3}\n")
    return ["--config-dir", str(d), "--config-name", "tiny"]


def test_gc_keeps_what_kept_lockfiles_need(tiny, cache_dir, tmp_path):
    for name, extra in (("keep", []), ("drop", ["quant.per_channel=false", "quant.calibration.method=entropy"])):
        proc = run_cli("build", *tiny, f"hydra.run.dir={name}", *extra, cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    keep = json.loads((tmp_path / "keep" / "report.json").read_text())
    shutil.rmtree(tmp_path / "drop")  # the user deletes one build: its lockfile no longer pins anything

    ls = run_cli("cache", "ls", "--builds", cache=cache_dir, cwd=tmp_path)
    assert keep["build_id"] in ls.stdout
    proc = run_cli("cache", "gc", "--older-than", "0", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and "kept 1 builds" in proc.stdout, proc.stdout + proc.stderr
    kept_keys = {s["key"] for s in keep["steps"]}
    cache = Cache(cache_dir)
    left = {r.key for r in cache.iter_actions()}
    assert left == kept_keys, "exactly the kept build's steps survive"
    referenced = {d for r in cache.iter_actions() for d in r.outputs.values()}
    kept = set().union(*(build_blobs(e) for _, e in cache.iter_builds()))  # lockfiles and reports
    assert set(cache.blobs.iter_digests()) == referenced | kept, "the dropped build's blobs are freed"

    rebuilt = run_cli("build", *tiny, "hydra.run.dir=keep2", cache=cache_dir, cwd=tmp_path)
    assert rebuilt.returncode == 0
    assert {s["status"] for s in json.loads((tmp_path / "keep2" / "report.json").read_text())["steps"]} == {"cached"}
    verify = run_cli("cache", "verify", cache=cache_dir, cwd=tmp_path)
    assert verify.returncode == 0 and "0 problem(s)" in verify.stdout

    everything = run_cli("cache", "gc", "--older-than", "0", "--include-kept", cache=cache_dir, cwd=tmp_path)
    assert everything.returncode == 0
    assert list(Cache(cache_dir).iter_actions()) == []


def test_verify_removes_damaged_entries(tiny, cache_dir, tmp_path):
    assert run_cli("build", *tiny, "hydra.run.dir=a", cache=cache_dir, cwd=tmp_path).returncode == 0
    cache = Cache(cache_dir)
    victim = next(r for r in cache.iter_actions() if r.kind == "quantize.ort_static")
    blob = cache.blobs.path(victim.outputs["model"])
    blob.chmod(0o644)
    blob.write_bytes(b"garbage")
    proc = run_cli("cache", "verify", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 1 and "quantize.ort_static" in proc.stderr
    assert cache.lookup(victim.key) is None


def test_gc_needs_a_policy(cache_dir, tmp_path):
    proc = run_cli("cache", "gc", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "--older-than" in proc.stderr


def test_parse_size():
    assert parse_size("5GB") == 5 * 2**30 and parse_size("1.5MiB") == int(1.5 * 2**20) and parse_size("100") == 100


def test_gc_max_size_drops_least_recently_used_first(tiny, cache_dir, tmp_path):
    import os
    import time

    for name, extra in (("a", ["quant.calibration.method=entropy"]), ("b", [])):
        proc = run_cli("build", *tiny, f"hydra.run.dir={name}", *extra, cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    b_keys = {s["key"] for s in json.loads((tmp_path / "b" / "report.json").read_text())["steps"]}
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")  # nothing kept: the size limit alone decides
    cache = Cache(cache_dir)
    only_a = sorted(r.key for r in cache.iter_actions() if r.key not in b_keys)
    assert only_a, "the entropy variant has steps of its own"
    now = time.time()
    for i, key in enumerate(only_a):  # a's own records were used long ago, the oldest first in this list
        os.utime(cache.action_path(key), (now - 10_000 + i, now - 10_000 + i))
    referenced = {d for r in cache.iter_actions() for d in r.outputs.values()}
    before = sum(cache.blobs.path(d).stat().st_size for d in referenced)
    proc = run_cli("cache", "gc", "--max-size", str(before - 1), cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    left = {r.key for r in cache.iter_actions()}
    assert only_a[0] not in left, "the least recently used record goes first"
    assert b_keys <= left, "recently used records stay"
    after = sum(cache.blobs.path(d).stat().st_size for d in cache.blobs.iter_digests())
    assert after <= before - 1, "what is left fits the limit (lockfiles of deleted builds are freed too)"
