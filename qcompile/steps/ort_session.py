"""ONNX Runtime sessions configured from the target's runtime spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def session(path: Path, runtime: dict[str, Any], spinning: bool = True):
    """An InferenceSession as the target runs it: its providers, thread count and optimisation level.

    ``spinning=False`` stops its thread pool busy-waiting for work between runs: two sessions alive in one process
    then stop taking CPU from each other (the paired speed-up measurement times them in turn).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.intra_op_num_threads = runtime.get("threads", 0)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[runtime.get("level", "all")])
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=list(runtime.get("providers", ["CPUExecutionProvider"])))
