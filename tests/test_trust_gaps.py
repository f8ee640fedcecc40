"""The last trust gaps of issue #19 (item 6), probed as a user or a CI job would meet them.

- A build that exits 2 leaves the cache exactly as it found it: every path and every byte, so no record, blob,
  failure record, lock file, memo (an ONNX signature included), lease, scratch folder or new folder.
- A read-only cache (permission bits, a read-only mount, or ``Cache(read_only=True)``) serves a fully cached build,
  ``plan`` and ``cache ls`` and writes nothing; a step it lacks is exit 2 naming the cache and the step.
- A full disk is exit 2 naming the file or folder that could not be written, never "?".
- Seeds outside numpy's range are bad input at load time; no message carries escape codes into a log file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, run_cli
from .test_trust import labels, tiny_recipes

RED = "\x1b[31m"
METRIC = 'def mae(outputs, labels):\n    raise ValueError("\\x1b[31mred alert\\x1b[0m")\n'
WITH_METRIC = '+eval.metrics={mae: {function: "mymetrics:mae", higher_is_better: false}}'


def tree(root: Path, times: bool = False) -> dict[str, str]:
    """Every path under ``root`` (folders too) with the sha256 of each file's content, and with ``times`` the
    modification time of every path: what "the cache is unchanged" compares."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        if times:
            out[rel] += f" {p.stat().st_mtime_ns}"
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The paths added (+), removed (-) or changed (~), for an assertion message that says what was written."""
    return [("+" if k not in before else "-" if k not in after else "~") + k
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def one_line(proc, *fragments: str, code: int = 2) -> str:
    """Assert exit ``code``, a single qcompile message holding every fragment, and no traceback; return it."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("qcompile:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A user's tiny ONNX recipe (plus a metric module that raises) and a cache holding one build of it."""
    work = tmp_path_factory.mktemp("gaps")
    args = tiny_recipes(work, y=labels())
    (work / "mymetrics.py").write_text(METRIC)
    cache = work / "cache"
    first = run_cli("build", *args, "hydra.run.dir=first", cache=cache, cwd=work)
    assert first.returncode == 0, first.stderr[-3000:]
    return work, args, cache


# ---------------------------------------------------------------- a build that exits 2 writes nothing
def _bad_files(work: Path) -> None:
    np.savez(work / "labels50.npz", x=np.zeros((40, 1, 28, 28), np.float32), y=np.arange(40) + 10)
    (work / "junk.npz").write_bytes(b"not a zip archive" * 50)
    if not (work / "moved.onnx").exists():
        shutil.copy(work / "model.onnx", work / "moved.onnx")  # a valid model at a path with no memo yet
    import onnx

    m = onnx.load(str(work / "model.onnx"))
    m.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    onnx.save(m, str(work / "double.onnx"))


@pytest.mark.parametrize("overrides, fragments", [
    (["model.input_shape=[3,28,28]"], ["model.input_shape"]),  # planning
    (["data.seed=-1"], ["data.seed"]),  # validation
    (["data.path={work}/labels50.npz"], ["data.y_key", "labels50.npz"]),  # a data file checked before any step
    # A valid model at a new path: its signature is learnt while planning, then the data file is junk.
    (["model.path={work}/moved.onnx", "data.path={work}/junk.npz"], ["data.path", "junk.npz"]),
    (["model.path={work}/double.onnx"], ["model.path", "double.onnx"]),  # reading the ONNX signature
    ([WITH_METRIC, "quant.calibration.samples=12"], ["eval.metrics.mae.function", "red alert"]),  # inside a run
], ids=["plan", "validation", "data-preflight", "onnx-memo", "onnx-signature", "step-run"])
def test_exit_2_leaves_the_cache_exactly_as_it_was(overrides, fragments, warm):
    work, args, cache = warm
    _bad_files(work)
    before = tree(cache)
    proc = run_cli("build", *args, *(o.replace("{work}", str(work)) for o in overrides), cache=cache, cwd=work)
    one_line(proc, "qcompile: bad input:", *fragments)
    assert changes(before, tree(cache)) == [], "a build that exits 2 writes nothing to the cache"


def test_exit_2_mid_build_on_a_fresh_cache_leaves_no_cache_folder(tmp_path):
    """Steps ran and were stored before the bad input showed: all of it goes, down to the folders it made."""
    args = tiny_recipes(tmp_path, y=labels())
    (tmp_path / "mymetrics.py").write_text(METRIC)
    proc = run_cli("build", *args, WITH_METRIC, cache=tmp_path / "cache", cwd=tmp_path)
    one_line(proc, "eval.metrics.mae.function")
    assert "▶ calibrate" in proc.stderr, "the steps before evaluation ran"
    assert not (tmp_path / "cache").exists()


def test_a_bug_in_a_step_is_still_recorded_as_a_failure(tmp_path, monkeypatch):
    """The failure record stays what it is for: a bug's traceback (exit 1), for `qcompile cache ls --failed`."""
    from qcompile.cache import Cache
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe
    from qcompile.run.scheduler import execute
    from qcompile.steps.base import get_step

    args = tiny_recipes(tmp_path, y=labels())
    monkeypatch.setenv("QCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    plan = compile_plan(load_recipe(args[3], [], args[1]))
    data = get_step(plan.node("data").kind)

    def broken(self, ctx, params):
        raise RuntimeError("a bug in the data step")

    monkeypatch.setattr(type(data), "run", broken)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(RuntimeError):
        execute(plan, cache)
    (record,) = (tmp_path / "cache" / "failures").glob("*.json")
    assert "a bug in the data step" in record.read_text()
    assert not list(cache.root.glob("locks/*.lock")) and not list(cache.root.glob("leases/*.json"))
    assert not list(cache.tmp.glob("run-*"))


def test_lock_files_go_with_the_build_that_made_them(warm):
    """Every step of the warm build ran under its lock; none of the lock files stays behind."""
    _, _, cache = warm
    assert (cache / "locks").is_dir() and not list((cache / "locks").iterdir())


# ---------------------------------------------------------------- read-only caches
def _modes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in [root, *root.rglob("*")]}


def _read_only_session(work: Path, args: list[str], cache: Path, out: str, fragment: str) -> None:
    """A fully cached build, plan and cache ls work; a miss is exit 2 naming the cache and the step."""
    built = run_cli("build", *args, f"hydra.run.dir={out}", cache=cache, cwd=work)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (work / out / "artifacts" / "model.int8.onnx").is_file() and (work / out / "report.json").is_file()
    plan = run_cli("plan", *args, cache=cache, cwd=work)
    assert plan.returncode == 0 and "cached" in plan.stdout and "will run" not in plan.stdout, plan.stderr[-2000:]
    ls = run_cli("cache", "ls", cache=cache, cwd=work)
    assert ls.returncode == 0 and "data.npz" in ls.stdout, ls.stderr[-2000:]
    miss = run_cli("build", *args, "quant.calibration.samples=12", cache=cache, cwd=work)
    one_line(miss, f"the cache {cache} is read-only", fragment, "step data", "is not in it", "QCOMPILE_CACHE_DIR")
    # Housekeeping would remove entries: refused, naming the cache (a dry run only reads, so it works).
    for verb in (["gc", "--older-than", "0"], ["verify"]):
        one_line(run_cli("cache", *verb, cache=cache, cwd=work), f"cache {verb[0]}: the cache {cache} is read-only")
    dry = run_cli("cache", "gc", "--older-than", "0", "--dry-run", cache=cache, cwd=work)
    assert dry.returncode == 0, dry.stderr[-2000:]


def test_a_cache_without_write_permission_serves_a_cached_build_and_writes_nothing(warm):
    """``chmod -R a-w`` on a shared cache: honoured even by root, whom the permission bits do not stop."""
    work, args, cache = warm
    modes = _modes(cache)
    before = tree(cache, times=True)
    for p in modes:
        os.chmod(p, modes[p] & ~0o222)
    try:
        _read_only_session(work, args, cache, "ro-bits", "no write permission")
        assert changes(before, tree(cache, times=True)) == [], "not a lease, lock, stamp, touch or memo"
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


def test_a_read_only_mount_is_found_by_trying(warm, tmp_path):
    """A cache mounted read-only (as CI shares one): its folders look writable, the first write is refused."""
    work, args, cache = warm
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(cache), str(mount)], capture_output=True).returncode:
        pytest.skip("a bind mount needs privileges this machine does not give")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], capture_output=True).returncode:
            pytest.skip("remounting read-only needs privileges this machine does not give")
        before = tree(cache, times=True)
        _read_only_session(work, args, mount, "ro-mount", "read-only file system")
        assert changes(before, tree(cache, times=True)) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_cache_opened_read_only_writes_nothing(warm, tmp_path, monkeypatch):
    """``Cache(read_only=True)``, through the library, on a cache the process could write."""
    from qcompile import build
    from qcompile.cache import Cache
    from qcompile.recipe.load import load_recipe
    from qcompile.run.progress import Reporter

    work, args, cache = warm
    monkeypatch.setenv("QCOMPILE_CACHE_DIR", str(cache))
    before = tree(cache, times=True)
    result = build(load_recipe(args[3], [], args[1]), tmp_path / "out", cache=Cache(cache, read_only=True),
                   reporter=Reporter(quiet=True))
    assert all(s["status"] == "cached" for s in result.report["steps"])
    assert changes(before, tree(cache, times=True)) == []


# ---------------------------------------------------------------- a full disk names the path
def _cli_with_fault(fault: str, argv: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process after ``fault`` (Python source) has replaced an OS call with one that fails
    as a full disk does: errno ENOSPC and no file name."""
    code = ("import errno, os, sys, zipfile\n"
            "def full(*a, **k):\n    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            f"{fault}\n"
            "from qcompile.cli import main\nmain(sys.argv[1:])\n")
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.parametrize("fault, where", [
    ("os.fsync = full", "tmp/blob-"),  # storing a step's output in the cache
    ("zipfile.ZipFile.writestr = full", "tmp/run-"),  # a step writing its own output
], ids=["cache-write", "step-write"])
def test_a_full_disk_names_what_could_not_be_written(fault, where, tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    cache = tmp_path / "cache"
    proc = _cli_with_fault(fault, ["build", *args], cache, tmp_path)
    line = one_line(proc, f"no space left on the device writing {cache}/{where}", "QCOMPILE_CACHE_DIR")
    assert "?" not in line
    assert not cache.exists(), "exit 2: what the build had stored is gone with its folders"


def test_a_real_full_disk_names_the_file_and_leaves_the_cache_as_it_was(tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    try:
        proc = run_cli("build", *args, cache=small / "cache", cwd=tmp_path)
        one_line(proc, f"no space left on the device writing {small / 'cache'}/")
        assert tree(small) == {}, "the full disk gets back every byte the build had written"
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_an_os_error_names_the_destination_of_a_copy():
    from qcompile.errors import as_bad_input

    copy = OSError(errno.ENOSPC, "No space left on device", "/cache/blobs/ab/abc", None, "/out/model.onnx")
    assert str(as_bad_input(copy)) == "no space left on the device writing /out/model.onnx"
    unnamed = as_bad_input(OSError(errno.ENOSPC, "No space left on device"))
    assert unnamed is not None and "?" not in str(unnamed)


# ---------------------------------------------------------------- seeds and escape codes
@pytest.mark.parametrize("override", ["data.seed=-1", "data.seed=-5", f"data.seed={2**32}", f"data.seed={2**64}"])
def test_a_seed_numpy_cannot_take_is_bad_input_at_load(override, tmp_path):
    from qcompile.errors import BadInput
    from qcompile.recipe.load import load_recipe

    args = tiny_recipes(tmp_path, y=labels())
    with pytest.raises(BadInput, match=r"^data\.seed: "):
        load_recipe(args[3], [override], args[1])
    assert load_recipe(args[3], [f"data.seed={2**32 - 1}"], args[1]).data.seed == 2**32 - 1


def _logged(argv: list[str], cache: Path, cwd: Path, name: str) -> tuple[int, str, str]:
    """Run the CLI with stdout and stderr going to log files, as CI captures them (colours not forced)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env |= {"QCOMPILE_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    out, err = cwd / f"{name}.out.log", cwd / f"{name}.err.log"
    with open(out, "w") as fo, open(err, "w") as fe:
        code = subprocess.run([sys.executable, "-m", "qcompile", *argv], cwd=cwd, env=env, stdout=fo, stderr=fe,
                              timeout=900).returncode
    return code, out.read_text(), err.read_text()


def test_no_escape_codes_reach_a_log_file(warm):
    """A message quoting a file name or an exception that holds escape codes shows them written out, and a built
    build's tables and lines carry none."""
    work, args, cache = warm
    code, out, err = _logged(["build", *args, f'data.path="/x/{RED}red.npz"'], cache, work, "bad")
    assert code == 2 and "\\x1b[31mred.npz" in err, err
    assert "\x1b" not in out + err
    code, out, err = _logged(["build", *args, WITH_METRIC, "quant.calibration.samples=12"], cache, work, "raising")
    assert code == 2 and "red alert" in err and "QCOMPILE_FULL_ERROR=1" in err, err
    assert "\x1b" not in out + err
    code, out, err = _logged(["build", *args, "hydra.run.dir=logged"], cache, work, "cached")
    assert code == 0 and "qcompile: built" in out, err
    assert "\x1b" not in out + err


def test_a_step_note_with_escape_codes_is_written_out():
    import io

    from rich.console import Console

    from qcompile.graph import Node
    from qcompile.run.progress import Reporter

    buf = io.StringIO()  # not a terminal: a log file
    Reporter(Console(file=buf, width=200)).note(Node("q", "quantize.x", None), f"{RED}[bold]opset 17[/bold]\x1b[0m")
    shown = buf.getvalue()
    assert "\\x1b[31m[bold]opset 17[/bold]\\x1b[0m" in shown, "written out, and not read as markup either"
    assert "\x1b" not in shown
