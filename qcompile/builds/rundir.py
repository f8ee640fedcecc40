"""Claiming a build's output folder, so a build never replaces another's results or deletes a user's files.

A build claims its folder by creating ``.qcompile-build`` with O_EXCL before anything is written there (for
``qcompile build``, before Hydra writes ``.hydra/``): a second build into the same folder, running or finished,
fails with bad input and touches nothing. A build that fails on bad input removes only what it created: the
whole folder when it made it, else just its claim.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..errors import BadInput

CLAIM = ".qcompile-build"
_claimed: dict[Path, bool] = {}  # folders this process claimed -> whether it created them


def claim(out_dir: str | Path) -> None:
    """Claim ``out_dir`` for this process's build (idempotent within the process)."""
    out = Path(out_dir).resolve()
    if (out / "report.json").exists():  # also when this process built it: a finished build is never replaced
        raise BadInput(f"{out} already holds a build; choose another output directory")
    if out in _claimed:
        return
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise BadInput(f"{out} is claimed by another build ({CLAIM} is there); choose another output "
                       "directory") from None
    except OSError as e:
        raise BadInput(f"cannot write the build folder {out}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
    _claimed[out] = created


def new_build_dir(name: str, root: str | Path = "qcompile-out") -> Path:
    """A folder no build has used: ``qcompile-out/<name>/<time>-<pid>-<n>`` (not yet created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        out = Path(root) / name / f"{stamp}-{os.getpid()}-{n}"
        if not out.exists() and out.resolve() not in _claimed:
            return out
    raise RuntimeError("no free build folder name")


def abandon(out_dir: str | Path) -> None:
    """Undo this process's claim after a build that never finished: remove only what the claim created."""
    out = Path(out_dir).resolve()
    created = _claimed.pop(out, None)
    if created is None or (out / "report.json").exists():
        return
    if created:
        shutil.rmtree(out, ignore_errors=True)
    else:
        (out / CLAIM).unlink(missing_ok=True)
