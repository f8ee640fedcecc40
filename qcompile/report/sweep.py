"""Sweep results: per-job failure records (the sweep table comes with the sweep work)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import QcompileError


def record_failure(out_dir: Path, error: QcompileError, overrides: list[str]) -> None:
    """Leave ``failure.json`` in a multirun job's folder so the sweep table can list the failed variant."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "failure.json").write_text(json.dumps(
        {"exit_code": error.exit_code, "error": str(error), "overrides": overrides}, indent=2) + "\n")
