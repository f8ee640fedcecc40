"""Reading and writing the .npz sample files that pass between steps."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def save_samples(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> None:
    """Write samples deterministically (fixed zip timestamps), so equal data gives equal digests."""
    arrays = {"x": np.ascontiguousarray(x, dtype=np.float32)}
    if y is not None:
        arrays["y"] = np.ascontiguousarray(y, dtype=np.int64)
    # np.savez stamps the current time into the zip; writing the members ourselves keeps bytes stable.
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())
    os.chmod(path, 0o644)


def load_samples(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from a file written by ``save_samples``."""
    with np.load(path, allow_pickle=False) as f:
        return f["x"], (f["y"] if "y" in f.files else None)


def batches(n: int, batch_size: int):
    """(start, stop) index pairs covering ``range(n)``."""
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def fixed_batch(shape: list) -> int | None:
    """The batch size an ONNX input is fixed to (``shape[0]`` an int), or None when the batch axis is dynamic."""
    dim = shape[0] if shape else None
    return dim if isinstance(dim, int) and dim > 0 else None


def model_batches(x: np.ndarray, batch_size: int, fixed: int | None):
    """(batch, valid rows) covering ``x``; a model with a fixed batch gets that size, the tail padded by repeats."""
    size = fixed or batch_size
    out = []
    for a, b in batches(len(x), size):
        chunk = x[a:b]
        if fixed and len(chunk) < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - len(chunk), axis=0)])
        out.append((chunk, b - a))
    return out
