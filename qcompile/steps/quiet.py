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
def quiet(*packages: str) -> Iterator[None]:
    """Silence stdout and the root-logger records of ``packages`` (onnxruntime.quantization logs INFO/WARNING
    through ``logging.info``) for the duration; the root logger's level and handlers are left as they were."""
    root = logging.getLogger()
    flt = _DropFrom(packages or ("onnxruntime",))
    root.addFilter(flt)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(flt)
