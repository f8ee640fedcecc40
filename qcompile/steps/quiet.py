"""Keep third-party chatter out of the build log without touching the user's logging configuration."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator


class _DropFrom(logging.Filter):
    """Drops records logged through the root logger from inside the named packages."""

    def __init__(self, packages: tuple[str, ...]):
        super().__init__()
        self.markers = tuple(f"/{p}/" for p in packages)

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(m in record.pathname for m in self.markers)


@contextlib.contextmanager
def quiet(*packages: str, loggers: tuple[str, ...] = ()) -> Iterator[None]:
    """Silence stdout and the root-logger records of ``packages`` (onnxruntime.quantization logs INFO/WARNING
    through ``logging.info``) for the duration; the root logger's level and handlers are left as they were.

    ``loggers`` names third-party loggers (and their children) that log INFO on their own: they are held at
    WARNING for the duration and given back their levels after.
    """
    root = logging.getLogger()
    flt = _DropFrom(packages or ("onnxruntime",))
    names = [n for n in list(logging.root.manager.loggerDict) for want in loggers
             if n == want or n.startswith(want + ".")] or list(loggers)
    held = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in held]
    root.addFilter(flt)
    for lg in held:
        lg.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(flt)
        for lg, level in zip(held, levels):
            lg.setLevel(level)
