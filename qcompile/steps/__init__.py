"""Step kinds: every module here is imported once (``qcompile.discover``), and each registers the steps it defines.

Importing them is cheap: heavy libraries (torch, onnx, onnxruntime) are imported inside ``run``. Modules that define
no step (``arrays``, ``metrics``...) are imported too and register nothing.
"""

from __future__ import annotations

from ..discover import import_modules

_loaded = False


def load_all() -> None:
    """Import every step module once so the registry is complete."""
    global _loaded
    if not _loaded:
        import_modules(__name__)
        _loaded = True
