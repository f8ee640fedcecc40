"""The layering contract (import-linter) holds, and it does fail when a module imports upward."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)


def test_contracts_hold():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "qcompile", tmp_path / "qcompile", ignore=shutil.ignore_patterns("__pycache__"))
    graph = tmp_path / "qcompile" / "graph.py"
    graph.write_text(graph.read_text() + "\nfrom .plan import compile_plan  # noqa: E402 - an upward import\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "qcompile.graph -> qcompile.plan" in proc.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "qcompile", tmp_path / "qcompile", ignore=shutil.ignore_patterns("__pycache__"))
    progress = tmp_path / "qcompile" / "run" / "progress.py"
    progress.write_text(progress.read_text() + "\nfrom . import scheduler  # noqa: E402 - closes a cycle\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout
