"""Reading and writing the .npz sample files that pass between steps: named arrays keyed by model input name,
plus optional integer labels."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where used: a fully cached build never loads it
    import numpy as np

LABELS = "__labels__"  # not a valid ONNX input name in practice, so it never collides with one
# Scored pairs of samples (rows: index a, index b, human score), for embedding models judged on similarity.
PAIRS = "__pairs__"
RESERVED = (LABELS, PAIRS)


def save_samples(path: Path, inputs: dict[str, np.ndarray], labels: np.ndarray | None = None,
                 pairs: np.ndarray | None = None) -> None:
    """Write samples deterministically (fixed zip timestamps, sorted names), so equal data gives equal digests.

    ``pairs`` (float64 rows of sample index a, sample index b, score) say how similar people judged two samples.
    """
    import numpy as np

    arrays = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
    if labels is not None:
        arrays[LABELS] = np.ascontiguousarray(labels, dtype=np.int64)
    if pairs is not None:
        arrays[PAIRS] = np.ascontiguousarray(pairs, dtype=np.float64).reshape(-1, 3)
    # np.savez stamps the current time into the zip; writing the members ourselves keeps bytes stable.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arrays[name], allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    os.chmod(path, 0o644)


def load_samples(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(inputs by name, labels or None) from a file written by ``save_samples``."""
    import numpy as np

    with np.load(path, allow_pickle=False) as f:
        inputs = {k: f[k] for k in f.files if k not in RESERVED}
        return inputs, (f[LABELS] if LABELS in f.files else None)


def load_pairs(path: Path) -> np.ndarray | None:
    """The scored pairs a sample file holds (rows: index a, index b, score), or None."""
    import numpy as np

    with np.load(path, allow_pickle=False) as f:
        return f[PAIRS] if PAIRS in f.files else None


def trim_padding(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A token batch cut to its longest row: samples are stored padded to their split's longest text, and a batch
    pays for every padded position, so each batch is padded only to its own longest (what tokenizers do).

    Only feeds with a 2-D ``attention_mask`` are cut, and only the inputs of the mask's shape."""
    import numpy as np

    mask = feed.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[1] < 2:
        return feed
    cols = np.flatnonzero(mask.any(axis=0))
    keep = max(int(cols[-1]) + 1 if len(cols) else 1, 2)
    if keep >= mask.shape[1]:
        return feed
    return {k: (np.ascontiguousarray(v[:, :keep]) if v.shape == mask.shape else v) for k, v in feed.items()}


def count(inputs: dict[str, np.ndarray]) -> int:
    """Number of samples (the batch axis of any input)."""
    return len(next(iter(inputs.values()))) if inputs else 0


def batches(n: int, batch_size: int):
    """(start, stop) index pairs covering ``range(n)``."""
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def fixed_batch(shape: list) -> int | None:
    """The batch size an ONNX input is fixed to (``shape[0]`` an int), or None when the batch axis is dynamic."""
    dim = shape[0] if shape else None
    return dim if isinstance(dim, int) and dim > 0 else None


def pad_batch(feed: dict[str, np.ndarray], fixed: int | None) -> dict[str, np.ndarray]:
    """A batch for a model with a fixed batch size: a short (tail) batch padded by repeating its last sample."""
    import numpy as np

    if not fixed:
        return feed
    return {k: v if len(v) >= fixed else np.concatenate([v, np.repeat(v[-1:], fixed - len(v), axis=0)])
            for k, v in feed.items()}


def model_batches(inputs: dict[str, np.ndarray], batch_size: int, fixed: int | None):
    """(feed, valid rows) covering every sample; a model with a fixed batch gets that size, the tail padded by
    repeating the last sample."""
    return [(trim_padding(pad_batch({name: x[a:b] for name, x in inputs.items()}, fixed)), b - a)
            for a, b in batches(count(inputs), fixed or batch_size)]


def session_fixed_batch(sess) -> int | None:
    """The fixed batch of an ORT session's inputs (all inputs share the batch axis), or None when dynamic."""
    return fixed_batch(sess.get_inputs()[0].shape)


class SampleFile:
    """Batches of a sample file read from disk as they are needed, so a step never holds the whole split.

    ``save_samples`` stores each array uncompressed, so a batch is one seek and one read at a known offset.
    """

    def __init__(self, path: Path):
        import numpy as np

        self.path = Path(path)
        self._arrays: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        with zipfile.ZipFile(self.path) as zf, open(self.path, "rb") as f:
            for info in zf.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"{self.path.name}: {info.filename} is compressed")
                f.seek(info.header_offset + 26)  # the local header's name and extra-field lengths
                skip = int.from_bytes(f.read(2), "little") + int.from_bytes(f.read(2), "little")
                f.seek(info.header_offset + 30 + skip)
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                if fortran or dtype.hasobject:
                    raise ValueError(f"{self.path.name}: {info.filename} is not a plain C-order array")
                self._arrays[info.filename.removesuffix(".npy")] = (f.tell(), dtype, tuple(shape))
        self.names = sorted(k for k in self._arrays if k not in RESERVED)
        self.count = self._arrays[self.names[0]][2][0] if self.names else 0

    def row_bytes(self) -> int:
        """Bytes of one sample across every input."""
        return sum(int(d.itemsize) * _prod(s[1:]) for k, (_, d, s) in self._arrays.items() if k not in RESERVED)

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start:stop`` of every input, read from the file."""
        import numpy as np

        out = {}
        with open(self.path, "rb") as f:
            for name in self.names:
                offset, dtype, shape = self._arrays[name]
                row = _prod(shape[1:])
                f.seek(offset + start * row * dtype.itemsize)
                out[name] = np.fromfile(f, dtype=dtype, count=(stop - start) * row).reshape((stop - start, *shape[1:]))
        return out


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n
