"""ONNX Runtime CPU sessions configured from the target section."""

from __future__ import annotations

from pathlib import Path

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def cpu_session(path: Path, threads: int = 0, level: str = "all"):
    """An InferenceSession on the CPU provider with the target's thread count and optimisation level."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
