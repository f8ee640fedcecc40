"""Shared fixtures: an isolated cache per test, and one demo build reused by the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh cache for this test (also seen by subprocesses through QCOMPILE_CACHE_DIR)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("QCOMPILE_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the end-to-end tests, so the demo model is trained once per test session."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture(scope="session")
def demo(shared_cache, tmp_path_factory):
    """The demo built once through the CLI into the shared cache: (work dir, report of ``work/first``)."""
    import json

    work = tmp_path_factory.mktemp("demo")
    proc = run_cli("build", "hydra.run.dir=first", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, json.loads((work / "first" / "report.json").read_text())


def run_cli(*args: str, cache: Path, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``qcompile`` in a fresh process, as a user would."""
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "qcompile", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def after_ctime_tick(path: Path, scratch: Path) -> None:
    """Return once a change made now gets a later ctime than ``path`` has.

    Filesystems take change times from a coarse clock (one kernel tick, 1 to 10 ms, where the kernel has no
    fine-grained change times, as before Linux 6.13): on a fast machine a file stamped and then edited within one
    tick keeps its ctime, and the edit is invisible to the stat stamps that the blob store and the composition memo
    compare (StatMemo's racy check covers that window; the blob store's trust does not). A test that edits a file
    it has just stamped waits here first, so its verdict does not depend on how fast the machine got there.
    ``scratch``: a folder on the same filesystem, for a probe file.
    """
    ctime = Path(path).stat().st_ctime_ns
    probe = Path(scratch) / f".ctime-probe-{os.getpid()}"
    deadline = time.monotonic() + 60
    try:
        while True:
            probe.write_bytes(b"")
            if probe.stat().st_ctime_ns > ctime:
                return
            assert time.monotonic() < deadline, f"the filesystem clock did not move past {path}'s ctime"
            time.sleep(0.001)
    finally:
        probe.unlink(missing_ok=True)


def wait_for_a_step_after_the_first(proc: subprocess.Popen, cache: Path, timeout: float = 600) -> Path:
    """Wait until the build ``proc`` (run with ``cache``) has stored a step and is running another: that step's
    scratch folder ``tmp/run-<key>-<pid>`` holds its staged inputs and its key has no record yet. Return the folder.

    Tests that interrupt a build mid-step wait for this rather than sleeping: a fixed sleep lands elsewhere on a
    faster or slower machine (or after the build has ended). Fails if the build ends first.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        stored = {p.stem[:16] for p in (cache / "actions").rglob("*.json")}
        if stored:
            for d in (cache / "tmp").glob(f"run-*-{proc.pid}"):
                # Its inputs staged: the step itself runs (the folder exists a moment before that).
                if d.name.split("-")[1] not in stored and any(not f.is_dir() for f in d.glob("inputs/*/*")):
                    return d
        time.sleep(0.01)
    why = f"the build ended (exit {proc.returncode})" if proc.poll() is not None else f"{timeout:.0f} s passed"
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"{why} before a second step started: {(err or '')[-2000:]}")


def cache_entries(cache: Path) -> list[Path]:
    """Action records and blobs in a cache (what a failed build must not leave behind)."""
    return sorted(p for sub in ("actions", "blobs") for p in (cache / sub).rglob("*") if p.is_file())


def export_tiny_onnx(path: Path, batch="batch", external_data: bool = False, seed: int = 0) -> None:
    """A real (if tiny) classifier graph, Flatten -> Gemm over (1, 28, 28) inputs, built with onnx.helper."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((784, 10)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], name="fc")], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external_data:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{Path(path).name}.data", size_threshold=0)
    else:
        onnx.save(model, str(path))
