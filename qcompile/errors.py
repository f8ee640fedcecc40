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
    """A quality gate (such as the accuracy drop limit) rejected the build."""

    exit_code = 3
