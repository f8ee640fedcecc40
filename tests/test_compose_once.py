"""A plain build composes its recipe once (Hydra alone composes twice); a recipe that asks for a multirun in
its own config still sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Runs the CLI in a fresh process and reports how many times Hydra composed a config (counted under
# compose_once's patch, so both Hydra's own and compose_once's compositions are seen).
CODE = """
import atexit, sys
from hydra._internal.hydra import Hydra
from qcompile import cli
count = [0]
stock = Hydra.compose_config
def counted(self, *a, **kw):
    count[0] += 1
    return stock(self, *a, **kw)
Hydra.compose_config = counted
atexit.register(lambda: print("COMPOSITIONS", count[0]))
cli.main(sys.argv[1:])
"""


def _run(*args, cache, cwd):
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache)}
    proc = subprocess.run([sys.executable, "-c", CODE, "build", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    count = int(proc.stdout.rsplit("COMPOSITIONS", 1)[1].split()[0])
    return proc, count


def test_plain_build_composes_once(cache_dir, tmp_path):
    # A recipe error after composition: no step runs, the count is the whole story.
    proc, count = _run("quant.calibration.batch_size=0", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "quant.calibration.batch_size" in proc.stderr, proc.stderr[-2000:]
    assert count == 1


def test_unknown_option_still_reported_by_hydra(cache_dir, tmp_path):
    proc, _ = _run("quant=int9", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "int9" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_recipe_that_sets_multirun_mode_still_sweeps(cache_dir, tmp_path):
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "swept.yaml").write_text(
        "defaults: [demo, _self_]\n"
        "hydra:\n  mode: MULTIRUN\n  sweep: {dir: " + str(tmp_path / "sweep") + "}\n"
        "  sweeper: {params: {quant.calibration.batch_size: '0,-1'}}\n")
    proc, count = _run("--config-dir", str(d), "--config-name", "swept", cache=cache_dir, cwd=tmp_path)
    failures = sorted((tmp_path / "sweep").glob("*/failure.json"))
    assert len(failures) == 2, (proc.returncode, proc.stderr[-2000:])
    assert {tuple(json.loads(f.read_text())["overrides"]) for f in failures} == {
        ("quant.calibration.batch_size=0",), ("quant.calibration.batch_size=-1",)}
    assert count > 1  # Hydra's own path ran
