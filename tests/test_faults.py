"""Faults: concurrent builds share work, SIGKILL leaves nothing half-written, tampering is caught."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from qcompile.cache import Cache

from .conftest import run_cli, wait_for_a_step_after_the_first


def _popen(cache, cwd, *args):
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "qcompile", "build", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_builds_at_once_run_each_step_once(cache_dir, tmp_path):
    procs = [_popen(cache_dir, tmp_path, f"hydra.run.dir=b{i}") for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    reports = [json.loads((tmp_path / f"b{i}" / "report.json").read_text()) for i in range(2)]
    for a, b in zip(reports[0]["steps"], reports[1]["steps"]):
        assert sorted([a["status"], b["status"]]) == ["cached", "ran"], (a, b)
    assert reports[0]["build_id"] == reports[1]["build_id"]


def test_sigkill_mid_build_then_resume(cache_dir, tmp_path):
    p = _popen(cache_dir, tmp_path, "hydra.run.dir=killed")
    for line in p.stderr:  # the reporter announces each step as it starts
        if "train" in line and "▶" in line:
            break
    # Training has its scratch folder (inputs staged, no output yet) and no record: kill it there. Waiting for
    # that, not for a fixed time, keeps the kill inside the step on a machine of any speed.
    scratch = wait_for_a_step_after_the_first(p, cache_dir)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert scratch.is_dir(), "a killed step's scratch folder stays behind, half written"
    cache = Cache(cache_dir)
    kinds = sorted(r.kind for r in cache.iter_actions())
    assert kinds == ["data.mnist"], kinds
    assert all(cache.lookup(r.key) is not None for r in cache.iter_actions()), "every record that exists is whole"
    assert not (tmp_path / "killed" / "report.json").exists()

    proc = run_cli("build", "hydra.run.dir=resumed", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {s["name"]: s["status"] for s in json.loads((tmp_path / "resumed" / "report.json").read_text())["steps"]}
    assert status["data"] == "cached" and status["train"] == "ran"


def test_tampered_cache_file_is_detected_and_rebuilt(demo, shared_cache, tmp_path):
    work, rep = demo
    digest = next(a["sha256"] for a in rep["artifacts"] if a["path"].endswith("model.int8.onnx"))
    blob = Cache(shared_cache).blobs.path(digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    proc = run_cli("build", "hydra.run.dir=after-tamper", cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "after-tamper" / "report.json").read_text())
    status = {s["name"]: s["status"] for s in again["steps"]}
    assert status["quantize"] == "ran" and status["export"] == "cached"
    # quantization is deterministic: the rebuilt model has the original digest, so evaluation stays cached
    assert status["evaluate.int8"] == status["evaluate.fp32"] == "cached"
    art = next(a for a in again["artifacts"] if a["path"].endswith("model.int8.onnx"))
    assert art["sha256"] == digest and Cache(shared_cache).blobs.verify(digest)


def test_sigkill_at_random_moments_never_leaves_a_half_written_entry(tmp_path, cache_dir):
    """Kill a fast real build at several moments; every record left must verify and the next build completes."""
    import random

    from .test_cache_manage import make_tiny_recipe

    args = make_tiny_recipe(tmp_path)
    rng = random.Random(0)
    for i in range(4):
        p = _popen(cache_dir, tmp_path, *args, f"hydra.run.dir=k{i}")
        time.sleep(rng.uniform(0.5, 3.0))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        cache = Cache(cache_dir)
        for rec in cache.iter_actions():
            assert cache.lookup(rec.key) is not None, f"record {rec.kind} is damaged after kill {i}"
    proc = run_cli("build", *args, "hydra.run.dir=final", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verify = run_cli("cache", "verify", cache=cache_dir, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr

