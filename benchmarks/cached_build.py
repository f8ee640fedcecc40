"""The demo build, cold and fully cached, as a ratio to ``python -c "import qcompile"``, each in a fresh process as
a user runs it (the same command line in the same folder each time).

    python benchmarks/cached_build.py [--rounds 5] [--compare LABEL=PYTHON[,ENV=VALUE] ...]

``--compare`` times another installation side by side in the same run (its own cache, its own cold build), for
example an older checkout's virtual environment: ``--compare before=../old/.venv/bin/python`` and
``--compare before-no-memo=../old/.venv/bin/python,QCOMPILE_COMPOSE_MEMO=0``. Rounds interleave the installations,
so a change in the machine's load touches them alike; the table gives the best of the rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(python: str, args: list[str], env: dict[str, str], cwd: str) -> tuple[float, set[str], int]:
    """(seconds, top-level modules imported, exit code) of ``python args`` in a fresh process."""
    env = {**os.environ, **env, "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run Python
    t0 = time.perf_counter()
    proc = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd=cwd)
    dt = time.perf_counter() - t0
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    return dt, loaded, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=PYTHON[,ENV=VALUE]")
    a = p.parse_args()
    installs = [("this checkout", sys.executable, {})]
    for spec in a.compare:
        label, _, rest = spec.partition("=")
        python, *pairs = rest.split(",")
        installs.append((label, python, dict(pair.split("=", 1) for pair in pairs)))
    with tempfile.TemporaryDirectory() as d:
        rows = {}
        for label, python, env in installs:
            home = Path(d) / label.replace(" ", "-")
            home.mkdir()
            env = {**env, "QCOMPILE_CACHE_DIR": str(home / "cache")}
            cold = _run(python, ["-m", "qcompile", "build"], env, str(home))
            rows[label] = {"cold": cold, "import": [], "cached": [], "env": env, "python": python, "home": home}
        for _ in range(a.rounds):
            for row in rows.values():
                row["import"].append(_run(row["python"], ["-c", "import qcompile"], row["env"], str(row["home"])))
                row["cached"].append(_run(row["python"], ["-m", "qcompile", "build"], row["env"], str(row["home"])))
    print(f"demo build, {a.rounds} rounds, {os.cpu_count()} CPUs; best of the rounds (all runs in parentheses)")
    print(f"{'installation':<22} {'cold s':>7} {'import s':>9} {'cached s':>9} {'cached/import':>14}  imports on "
          "the cached build")
    for label, row in rows.items():
        imp = min(t for t, _, _ in row["import"])
        cached = min(t for t, _, _ in row["cached"])
        codes = {c for _, _, c in row["cached"]} | {row["cold"][2]}
        loaded = row["cached"][-1][1]
        heavy = ", ".join(m for m in ("hydra", "torch", "onnx", "onnxruntime") if m in loaded) or "none of them"
        print(f"{label:<22} {row['cold'][0]:7.2f} {imp:9.2f} {cached:9.2f} {cached / imp:13.2f}x  {heavy}"
              f"{'' if codes == {0} else f' (exit codes {sorted(codes)})'}")
        print(f"{'':<22} {'':>7} ({', '.join(f'{t:.2f}' for t, _, _ in row['import'])}) "
              f"({', '.join(f'{t:.2f}' for t, _, _ in row['cached'])})")


if __name__ == "__main__":
    main()
