"""Errors that carry an exit code, so the CLI can map them without tracebacks.

Exit codes are a contract (see ARCHITECTURE.md): 0 built, 1 a bug, 2 bad input, 3 a quality gate failed.
"""

from __future__ import annotations


class QcompileError(Exception):
    """Base class for errors the user can act on; never shown with a traceback."""

    exit_code = 1


class BadInput(QcompileError):
    """A recipe, file or data set the user supplied is wrong.

    ``key`` names the recipe key (``quant.calibration.samples``) or file at fault, so the message can point
    the user straight at what to change.
    """

    exit_code = 2

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class GateFailed(QcompileError):
    """A quality gate (such as the accuracy drop limit) rejected the build, after its report was written.

    ``out_dir``, ``build_id`` and ``report`` (report.json's content) say which build, so a caller can read the
    failed gates and the measurements behind them without searching for the folder. ``next_steps`` lists what to
    try for this recipe, each line starting with the override to give (``qcompile.report.next_steps``): the same
    advice the CLI prints and report.md opens with.
    """

    exit_code = 3

    def __init__(self, message: str, out_dir=None, build_id: str | None = None, report: dict | None = None,
                 next_steps: list[str] | None = None):
        super().__init__(message)
        self.out_dir = out_dir
        self.build_id = build_id
        self.report = report
        self.next_steps = list(next_steps or [])


# OS errors that a user's machine or files cause, not qcompile: reported as bad input naming the path.
_USER_ERRNOS = {"ENOSPC": "no space left on the device", "EDQUOT": "disk quota exceeded",
                "EACCES": "permission denied", "EPERM": "operation not permitted", "EROFS": "read-only file system",
                "ENOTDIR": "a path component is a file, not a folder",
                "EEXIST": "exists, and is not a folder", "EISDIR": "is a folder, not a file"}


def as_bad_input(e: OSError, cache_root=None) -> BadInput | None:
    """A ``BadInput`` naming the file for an OS error the user's environment caused (full disk, read-only or
    misplaced cache folder, unreadable file), else None (a bug, shown with its traceback)."""
    import errno
    from pathlib import Path

    name = errno.errorcode.get(e.errno or 0, "")
    if name not in _USER_ERRNOS:
        return None
    where = e.filename or "?"
    in_cache = cache_root is not None and Path(str(where)).is_relative_to(cache_root)
    hint = f" (in the cache {cache_root}: set QCOMPILE_CACHE_DIR to a writable folder)" if in_cache else ""
    return BadInput(f"{where}: {_USER_ERRNOS[name]}{hint}")
