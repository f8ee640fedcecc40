"""Step kinds. Each module registers its steps; importing them is cheap (heavy imports live in ``run``)."""

from __future__ import annotations

import importlib

_MODULES = ("data", "images", "model", "factory",
            "export", "optimize", "calibrate", "quantize", "evaluate", "benchmark", "compare",
            "package", "trt_check", "trt_engine", "trt_runtime", "ort_format")
_loaded = False


def load_all() -> None:
    """Import every step module once so the registry is complete."""
    global _loaded
    if not _loaded:
        for name in _MODULES:
            importlib.import_module(f"{__name__}.{name}")
        _loaded = True
