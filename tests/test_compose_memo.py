"""A rebuild of an unchanged recipe skips Hydra through a memo of its composition; any change to what the
composition read (a recipe file edited in place, a file added that shadows a packaged one, an environment
variable a recipe reads) composes again, and what the memo path writes is what Hydra writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import after_ctime_tick
from .test_trust import tiny_recipes

# The CLI in a fresh process, saying at exit whether Hydra was imported (the memo path never imports it).
CODE = """
import atexit, sys
from qcompile import cli
atexit.register(lambda: print("HYDRA_IMPORTED", "hydra" in sys.modules))
cli.main(sys.argv[1:])
"""


def build(*args: str, cache: Path, cwd: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, bool]:
    full_env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", CODE, "build", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)
    return proc, proc.stdout.rsplit("HYDRA_IMPORTED", 1)[1].split()[0] == "True"


def lock(out: Path) -> dict:
    return json.loads((out / "qcompile.lock.json").read_text())


def test_a_rebuild_skips_hydra_and_writes_what_hydra_writes(tmp_path, cache_dir):
    args = tiny_recipes(tmp_path, y=np.arange(40) % 10)
    first, hydra_ran = build(*args, "hydra.run.dir=first", cache=cache_dir, cwd=tmp_path)
    assert first.returncode == 0 and hydra_ran, first.stderr[-3000:]
    assert len(list((cache_dir / "compose").glob("*.json"))) == 1
    out = [build(*args, cache=cache_dir, cwd=tmp_path) for _ in range(2)]
    assert all(p.returncode == 0 for p, _ in out), out[0][0].stderr[-3000:]
    assert out[0][1] is True and out[1][1] is False  # another command line: composed once, then memoized
    runs = sorted((tmp_path / "qcompile-out" / "tiny").iterdir())
    assert len(runs) == 2
    hydra_run, memo_run = runs
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        a = (hydra_run / ".hydra" / name).read_text()
        b = (memo_run / ".hydra" / name).read_text()
        assert a.replace(str(hydra_run), str(memo_run)) == b, name
    assert (memo_run / "qcompile.log").exists() and (memo_run / "report.json").exists()
    assert lock(memo_run)["build_id"] == lock(hydra_run)["build_id"]
    assert "cached" in out[1][0].stderr  # the step table, as after any build
    # A finished build's folder is never reused, with or without Hydra.
    again, hydra_ran = build(*args, "hydra.run.dir=first", cache=cache_dir, cwd=tmp_path)
    assert again.returncode == 2 and not hydra_ran and "already holds a build" in again.stderr, again.stderr
    # gc takes memos with the records: the next build composes again.
    proc = subprocess.run([sys.executable, "-m", "qcompile", "cache", "gc", "--older-than", "0"], cwd=tmp_path,
                          env={**os.environ, "QCOMPILE_CACHE_DIR": str(cache_dir)}, capture_output=True, text=True)
    assert proc.returncode == 0 and "composition memos" in proc.stdout, proc.stderr
    assert not list((cache_dir / "compose").glob("*.json"))


def test_any_change_to_what_was_composed_composes_again(tmp_path, cache_dir):
    args = tiny_recipes(tmp_path, y=np.arange(40) % 10)
    top = tmp_path / "recipes" / "tiny.yaml"
    top.write_text(top.read_text().replace("_self_]", "{optional eval: extra}, _self_]"))  # no such file yet
    assert build(*args, cache=cache_dir, cwd=tmp_path)[0].returncode == 0
    proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and not hydra_ran
    recipes = tmp_path / "recipes"

    # An edit in place that keeps the size and the modification time: only the ctime tells.
    st = top.stat()
    top.write_text(top.read_text().replace("iterations: 3", "iterations: 4"))
    os.utime(top, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert top.stat().st_size == st.st_size and top.stat().st_mtime_ns == st.st_mtime_ns
    proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and hydra_ran, proc.stderr[-3000:]
    newest = max((tmp_path / "qcompile-out" / "tiny").iterdir())
    assert lock(newest)["recipe"]["bench"]["iterations"] == 4

    # A new file in the user's folder: the optional group option the recipe names now exists.
    assert build(*args, cache=cache_dir, cwd=tmp_path)[0].returncode == 0  # records the memo
    assert not build(*args, cache=cache_dir, cwd=tmp_path)[1]
    (recipes / "eval").mkdir()
    (recipes / "eval" / "extra.yaml").write_text("min_cosine: 0.5\n")
    proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and hydra_ran, proc.stderr[-3000:]
    newest = max((tmp_path / "qcompile-out" / "tiny").iterdir())
    assert lock(newest)["recipe"]["eval"]["min_cosine"] == 0.5


@pytest.mark.parametrize("where", ["recipe", "defaults list"])
def test_a_recipe_that_reads_the_environment_is_never_memoized(where, tmp_path, cache_dir):
    args = tiny_recipes(tmp_path, y=np.arange(40) % 10)
    recipes = tmp_path / "recipes"
    top = recipes / "tiny.yaml"
    if where == "recipe":
        top.write_text(top.read_text().replace("name: tiny", "name: ${oc.env:QC_TEST_NAME}"))
    else:  # the data option comes from the environment: Hydra drops the defaults list from what it composes
        data = (recipes / "data" / "tiny.yaml").read_text()
        for name, n in (("alpha", 8), ("beta", 12), ("gamma", 16)):
            (recipes / "data" / f"{name}.yaml").write_text(data.replace("eval_samples: 16", f"eval_samples: {n}"))
        top.write_text(top.read_text().replace("{data: tiny}", "{data: '${oc.env:QC_TEST_NAME}'}"))
    for name in ("alpha", "alpha", "beta", "gamma"):
        proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path, env={"QC_TEST_NAME": name})
        assert proc.returncode == 0 and hydra_ran, proc.stderr[-3000:]
        if where == "recipe":
            assert (tmp_path / "qcompile-out" / name).is_dir()
        else:
            newest = max((tmp_path / "qcompile-out" / "tiny").iterdir())
            assert lock(newest)["recipe"]["data"]["eval_samples"] == {"alpha": 8, "beta": 12, "gamma": 16}[name]
    assert not list((cache_dir / "compose").glob("*.json"))


def test_edits_behind_a_symlinked_group_folder_are_seen(tmp_path, cache_dir):
    args = tiny_recipes(tmp_path, y=np.arange(40) % 10)
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "recipes" / "data").rename(shared / "data")
    (tmp_path / "recipes" / "data").symlink_to(shared / "data")
    assert build(*args, cache=cache_dir, cwd=tmp_path)[0].returncode == 0
    assert not build(*args, cache=cache_dir, cwd=tmp_path)[1]
    f = shared / "data" / "tiny.yaml"
    f.write_text(f.read_text().replace("eval_samples: 16", "eval_samples: 24"))
    proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and hydra_ran, proc.stderr[-3000:]
    newest = max((tmp_path / "qcompile-out" / "tiny").iterdir())
    assert lock(newest)["recipe"]["data"]["eval_samples"] == 24


def test_what_a_memo_could_not_repeat_is_never_memoized(tmp_path, cache_dir):
    """A log file named after the run folder (resolved once, it would point at the first run's folder), and a
    composition that warns (a memo would not warn again)."""
    args = tiny_recipes(tmp_path, y=np.arange(40) % 10)
    top = tmp_path / "recipes" / "tiny.yaml"
    top.write_text(top.read_text() + "hydra: {job_logging: {handlers: {file: {filename: '${hydra.run.dir}/mine.log'}}}}\n")
    for _ in range(2):
        proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 0 and hydra_ran, proc.stderr[-3000:]
    assert all((run / "mine.log").exists() for run in (tmp_path / "qcompile-out" / "tiny").iterdir())
    top.write_text(top.read_text().replace(", _self_]", "]"))  # Hydra warns: the defaults list lacks _self_
    for _ in range(2):
        proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 0 and hydra_ran and "_self_" in proc.stderr, proc.stderr[-3000:]
    assert not list((cache_dir / "compose").glob("*.json"))


def test_relative_paths_are_resolved_again_on_a_memoized_build(tmp_path, cache_dir):
    """The memo holds the recipe as composed: a relative path outside the recipe folder (here through a symlink
    the user retargets) is resolved again by every build."""
    args = tiny_recipes(tmp_path, y=np.arange(40) % 10)
    shared = tmp_path / "shared"
    for version, n in (("v1", 40), ("v2", 48)):
        (shared / version).mkdir(parents=True)
        rng = np.random.default_rng(n)
        np.savez(shared / version / "data.npz", x=rng.standard_normal((n, 1, 28, 28)).astype(np.float32),
                 y=np.arange(n) % 10)
    (shared / "current").symlink_to("v1")
    data = tmp_path / "recipes" / "data" / "tiny.yaml"
    data.write_text(data.read_text().replace(f"path: {tmp_path}/data.npz", "path: ../../shared/current/data.npz"))
    assert build(*args, cache=cache_dir, cwd=tmp_path)[0].returncode == 0
    proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and not hydra_ran
    (shared / "current").unlink()
    (shared / "current").symlink_to("v2")
    proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and not hydra_ran, proc.stderr[-3000:]
    newest = max((tmp_path / "qcompile-out" / "tiny").iterdir())
    assert lock(newest)["recipe"]["data"]["path"] == str(shared / "v2" / "data.npz")


def test_memo_off_and_sweeps_always_run_hydra(tmp_path, cache_dir):
    args = tiny_recipes(tmp_path, y=np.arange(40) % 10)
    assert build(*args, cache=cache_dir, cwd=tmp_path)[0].returncode == 0
    proc, hydra_ran = build(*args, cache=cache_dir, cwd=tmp_path, env={"QCOMPILE_COMPOSE_MEMO": "0"})
    assert proc.returncode == 0 and hydra_ran
    proc, hydra_ran = build(*args, "-m", "bench.iterations=3", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and hydra_ran, proc.stderr[-3000:]


def test_code_is_compared_by_stamp_and_listing_bytecode_aside(tmp_path):
    """Python writing a package's first bytecode folder keeps the memo; a module added, removed or edited does not."""
    from qcompile.compose_memo.sources import code_stamps, stamps_unchanged

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    stamps = code_stamps([str(pkg)])
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0" * 16)
    assert stamps_unchanged(stamps)
    (pkg / "b.py").write_text("y = 2\n")
    assert not stamps_unchanged(stamps)
    (pkg / "b.py").unlink()
    assert stamps_unchanged(stamps)
    after_ctime_tick(pkg / "a.py", tmp_path)  # stamped in this tick, an edit would keep the ctime as well
    st = (pkg / "a.py").stat()
    (pkg / "a.py").write_text("x = 2\n")
    os.utime(pkg / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))  # the same size and mtime: the ctime tells
    assert not stamps_unchanged(stamps)
