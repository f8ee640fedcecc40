"""Errors that carry an exit code, so the CLI can map them without tracebacks.

Exit codes are a contract (see ARCHITECTURE.md): 0 built, 1 a bug, 2 bad input, 3 a quality gate failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# C0 controls but tab and newline, DEL and the C1 controls (0x9b is a one-byte CSI on some terminals).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with its control characters written out as Python escapes (``\\x1b``): a file name or a library's
    coloured message then never drives the terminal, nor leaves escape codes in a log file."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class QcompileError(Exception):
    """Base class for errors the user can act on; never shown with a traceback."""

    exit_code = 1

    def __str__(self) -> str:
        # Messages quote what the user gave (paths, values) and what libraries said: keep control codes out.
        return printable(super().__str__())


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
_USER_ERRNOS = {"ENOSPC": "no space left on the device writing {}", "EDQUOT": "disk quota exceeded writing {}",
                "EACCES": "permission denied: {}", "EPERM": "operation not permitted: {}",
                "EROFS": "{} is on a read-only file system", "ENOTDIR": "{}: a path component is a file, not a folder",
                "EEXIST": "{} exists, and is not a folder", "EISDIR": "{} is a folder, not a file"}
_FULL = {"ENOSPC", "EDQUOT"}


def _errno_name(e: OSError) -> str:
    import errno

    return errno.errorcode.get(e.errno or 0, "")


def as_bad_input(e: OSError, cache_root=None) -> BadInput | None:
    """A ``BadInput`` naming the file for an OS error the user's environment caused (full disk, read-only or
    misplaced cache folder, unreadable file), else None (a bug, shown with its traceback)."""
    name = _errno_name(e)
    if name not in _USER_ERRNOS:
        return None
    # A copy names its source first and its destination second: a full disk is the destination's.
    where = (e.filename2 if name in _FULL and e.filename2 else e.filename) or "a file qcompile was not told of"
    hint = ""
    if cache_root is not None and Path(str(where)).is_relative_to(cache_root):
        hint = (f" (the cache {cache_root}: free space, e.g. `qcompile cache gc --max-size 5GB`, or set "
                "QCOMPILE_CACHE_DIR to a folder on another disk)" if name in _FULL else
                f" (in the cache {cache_root}: set QCOMPILE_CACHE_DIR to a writable folder)")
    return BadInput(_USER_ERRNOS[name].format(where) + hint)


def is_bad_input(e: BaseException) -> bool:
    """True for what exits 2: bad input, or an OS error of the user's environment (``as_bad_input``). A build
    that ends so leaves nothing in the cache."""
    if isinstance(e, QcompileError):
        return e.exit_code == 2
    return isinstance(e, OSError) and _errno_name(e) in _USER_ERRNOS


@contextmanager
def naming(path) -> Iterator[None]:
    """Give an OS error raised inside the block the path it was writing when it names none.

    A full disk fails ``write``, ``flush`` or ``close`` on an open file, and Python reports those without a file
    name: the caller that knows where the bytes were going says it, so the message is never "?: no space left".
    """
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            e.filename = str(path)
        raise
