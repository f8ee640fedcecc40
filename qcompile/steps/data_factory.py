"""The ``data.factory`` step: the user's dataloader function, its batches streamed to disk as they come.

Memory stays bounded by one batch: each batch is checked against the model's inputs and its rows appended to one raw
file per input (and one for labels); once the count is known the split is drawn and each split's ``.npz`` is written
member by member, its rows copied from the raw files in chunks. No memory map is used, so the kernel's resident-set
high-water mark (the step's ``peak_mb``) does not grow with the data either. The ``.npz`` layout is the one
``arrays.save_samples`` writes (uncompressed ``.npy`` members, sorted, fixed timestamps), so equal samples give equal
bytes and ``SampleFile`` reads its batches.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..kinds.data.factory import LABELS_KEY, DataFactoryParams
from ..models.factory import import_function
from .arrays import LABELS
from .base import Step, StepContext, register
from .data import split

if TYPE_CHECKING:  # numpy is imported where it is used: a fully cached build never imports it
    import numpy as np

KEY = "data.function"
CHUNK = 8 << 20  # bytes of rows copied at once from a raw file into a split's member


@register
class DataFactoryStep(Step):
    """Calls ``data.function`` (once, or once per split), checks every batch, and writes calib.npz and eval.npz."""

    kind = "data.factory"
    Params = DataFactoryParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy",)
    file_fields = ("source",)
    unkeyed = ("data.root",)  # the module reaches the key as its file's content: moving the folder reruns nothing

    def preflight(self, p: DataFactoryParams) -> None:
        import_function(p.data.function, p.data.root, KEY)  # imports and is callable; calling it is the run's work

    def run(self, ctx: StepContext, p: DataFactoryParams) -> dict[str, Any]:
        import numpy as np

        fn = import_function(p.data.function, p.data.root, KEY)
        d = p.data
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            if d.splits == "seeded":
                spool = Spool(Path(tmp) / "all", p)
                spool.fill(batches(fn, p, None), limit=None)
                need = d.eval_samples + p.calib_samples
                if spool.n < need:
                    raise BadInput(f"{d.function} gave {spool.n} samples; data.eval_samples={d.eval_samples} plus "
                                   f"quant.calibration.samples={p.calib_samples} need {need}", key=KEY)
                eval_idx, _, calib_idx = split(spool.n, d.eval_samples, p.calib_samples, d.seed)
                spool.write_npz(ctx.out("calib"), calib_idx, labels=False)
                spool.write_npz(ctx.out("eval"), eval_idx, labels=d.labels)
                return {"samples": spool.n, "calib": len(calib_idx), "eval": len(eval_idx), "labels": d.labels}
            for name, want in (("calib", p.calib_samples), ("eval", d.eval_samples)):
                spool = Spool(Path(tmp) / name, p)
                if want:  # a scheme that calibrates nothing never asks the function for a calibration split
                    spool.fill(batches(fn, p, name), limit=want)
                if spool.n < want:
                    option = "data.eval_samples" if name == "eval" else "quant.calibration.samples"
                    raise BadInput(f"{d.function}(split={name!r}) gave {spool.n} samples; {option} asks {want}",
                                   key=KEY)
                spool.write_npz(ctx.out(name), np.arange(want), labels=d.labels and name == "eval")
            return {"calib": p.calib_samples, "eval": d.eval_samples, "labels": d.labels}


def batches(fn, p: DataFactoryParams, split_name: str | None) -> Iterator[Mapping[str, Any]]:
    """The dicts the function returns or yields; whatever it raises (also mid-iteration) is bad input naming it, with
    its exception chained so ``QCOMPILE_FULL_ERROR=1`` shows the user's traceback."""
    kwargs = dict(p.data.kwargs or {})
    call = f"{p.data.function}(**data.kwargs)"
    if split_name is not None:
        kwargs["split"] = split_name
        call = f"{p.data.function}(**data.kwargs, split={split_name!r})"
    try:
        got = fn(**kwargs)
    except Exception as e:  # the user's function
        raise BadInput(f"{call} raised {type(e).__name__}: {str(e)[:200]}", key=KEY) from e
    if isinstance(got, Mapping):
        yield got
        return
    if not isinstance(got, Iterable) or isinstance(got, (str, bytes)) or hasattr(got, "dtype"):
        raise BadInput(f"{p.data.function} returned {type(got).__name__}, not a dict of arrays or an iterable of "
                       "them", key=KEY)
    it, i = iter(got), 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as e:  # the user's generator or dataloader
            raise BadInput(f"{call} raised {type(e).__name__} at batch {i}: {str(e)[:200]}", key=KEY) from e
        if not isinstance(batch, Mapping):
            raise BadInput(f"{p.data.function} gave {type(batch).__name__} as batch {i}, not a dict of arrays "
                           f"keyed by input name", key=KEY)
        yield batch
        del batch  # hold no batch while the function makes the next
        i += 1


class Spool:
    """The rows of one source (the whole data, or one split the function gave) in one raw file per array."""

    def __init__(self, folder: Path, p: DataFactoryParams):
        folder.mkdir()
        self.folder, self.p, self.n = folder, p, 0
        self.specs = {s.name: s for s in p.inputs}
        # name -> (dtype, sample shape), fixed by the first batch (a dynamic axis must agree across batches)
        self.layout: dict[str, tuple[Any, tuple[int, ...]]] = {}

    def fill(self, source: Iterator[Mapping[str, Any]], limit: int | None) -> None:
        """Append every batch's rows (up to ``limit`` samples) to the raw files."""
        files = {}
        try:
            for i, batch in enumerate(source):
                arrays, rows = self._check(batch, i)
                take = rows if limit is None else min(rows, limit - self.n)
                for name, a in arrays.items():
                    if name not in files:
                        files[name] = open(self.folder / f"{name}.raw", "wb")
                    files[name].write(memoryview(a[:take]).cast("B"))
                self.n += take
                del batch, arrays
                if limit is not None and self.n >= limit:
                    break  # enough: a long (or endless) stream is not read to its end
        finally:
            for f in files.values():
                f.close()
            if hasattr(source, "close"):
                source.close()

    def _check(self, batch: Mapping[str, Any], i: int) -> tuple[dict[str, np.ndarray], int]:
        """The batch's arrays (each with a batch axis, the model's dtype, C order) and its row count."""
        import numpy as np

        p, fn = self.p, self.p.data.function
        want = [*self.specs, *([LABELS_KEY] if p.data.labels else [])]
        missing = [k for k in want if k not in batch]
        if missing:
            hint = " (set data.labels=false for unlabelled samples)" if missing == [LABELS_KEY] else ""
            raise BadInput(f"{fn} gave no array for {missing[0]!r} in batch {i} (it gave {sorted(map(str, batch))}; "
                           f"the model's inputs are {list(self.specs)}){hint}", key=KEY)
        extra = sorted(str(k) for k in batch if k not in want)
        if extra:
            hint = (" (data.labels is false)" if extra == [LABELS_KEY]
                    else f"; the model's inputs are {list(self.specs)}")
            raise BadInput(f"{fn} gave {extra} in batch {i}, which the model does not take{hint}", key=KEY)
        out, rows, single = {}, None, None
        for name, spec in self.specs.items():
            x = np.asarray(batch[name])
            shape = spec.sample_shape
            if single is None:  # one sample (no batch axis) or a batch: told by the first input's rank
                single = x.ndim == len(shape)
            x = x[None] if single and x.ndim == len(shape) else x
            found = f"{x.dtype} {tuple(x.shape[1:])}"
            if x.ndim != len(shape) + 1 or any(isinstance(w, int) and w != g for w, g in zip(shape, x.shape[1:])):
                raise BadInput(f"{fn} gave input {name!r} of shape {tuple(np.shape(batch[name]))} in batch {i}; the "
                               f"model takes {tuple(shape)} per sample (a batch adds a first axis)", key=KEY)
            if spec.is_float:
                if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
                    raise BadInput(f"{fn} gave input {name!r} as {found} in batch {i}; the model takes finite "
                                   f"{spec.dtype}", key=KEY)
            elif not (np.issubdtype(x.dtype, np.integer) or (spec.dtype == "bool" and x.dtype == np.bool_)):
                raise BadInput(f"{fn} gave input {name!r} as {found} in batch {i}; the model takes {spec.dtype}",
                               key=KEY)
            out[name] = self._fix(name, np.ascontiguousarray(x, dtype=spec.dtype), i)
            rows = len(x) if rows is None else rows
            if len(x) != rows:
                raise BadInput(f"{fn} gave {len(x)} rows of {name!r} but {rows} of {next(iter(out))!r} in batch {i}",
                               key=KEY)
        if p.data.labels:
            out[LABELS] = self._fix(LABELS, self._labels(batch[LABELS_KEY], single, rows, i), i)
        return out, rows

    def _labels(self, y: Any, single: bool, rows: int, i: int) -> np.ndarray:
        """A batch's labels: one integer per sample in the classifier's range, or any numeric shape otherwise."""
        import numpy as np

        fn, y = self.p.data.function, np.asarray(y)
        y = y[None] if single else y
        if y.ndim == 0 or len(y) != rows or y.dtype.kind not in "biuf":
            raise BadInput(f"{fn} gave labels {y.dtype} {tuple(y.shape)} in batch {i}; they need one numeric row "
                           f"per sample ({rows})", key=KEY)
        if self.p.classification:
            classes = self.p.classes
            if y.ndim != 1 or y.dtype.kind not in "iu":
                raise BadInput(f"{fn} gave labels {y.dtype} {tuple(y.shape)} in batch {i}; a classifier's labels are "
                               "one integer class index per sample", key=KEY)
            if classes is not None and len(y) and (y.min() < 0 or y.max() >= classes):
                raise BadInput(f"{fn} gave labels from {y.min()} to {y.max()} in batch {i}, but the model has "
                               f"{classes} classes (0..{classes - 1})", key=KEY)
            return np.ascontiguousarray(y, dtype=np.int64)  # what evaluation reads a classifier's labels as
        return np.ascontiguousarray(y)

    def _fix(self, name: str, x: np.ndarray, i: int) -> np.ndarray:
        """``x`` with the dtype and sample shape of its first batch: the rows of all batches form one array."""
        import numpy as np

        first = self.layout.setdefault(name, (x.dtype, x.shape[1:]))
        if x.shape[1:] != first[1]:
            raise BadInput(f"{self.p.data.function} gave {name!r} of sample shape {x.shape[1:]} in batch {i} after "
                           f"{first[1]} before; every batch's samples must have one shape", key=KEY)
        if x.dtype != first[0]:
            if not np.can_cast(x.dtype, first[0], "same_kind"):
                raise BadInput(f"{self.p.data.function} gave {name!r} as {x.dtype} in batch {i} after {first[0]} "
                               "before", key=KEY)
            x = np.ascontiguousarray(x, dtype=first[0])
        return x

    def write_npz(self, path: Path, idx, labels: bool) -> None:
        """Rows ``idx`` (in that order) of every input, and of the labels when asked, as ``save_samples`` writes
        them: one uncompressed ``.npy`` member per array, in sorted order, with fixed timestamps."""
        import numpy as np

        names = [*self.specs, *([LABELS] if labels else [])]
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(names):
                dtype, sample = self.layout.get(name, (np.dtype(self.specs[name].dtype) if name in self.specs
                                                       else np.dtype(np.int64), _zero_dims(self.specs.get(name))))
                header = _npy_header(dtype, (len(idx), *sample))
                row = dtype.itemsize * int(np.prod(sample, dtype=np.int64))
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.file_size = len(header) + row * len(idx)  # known up front: ZIP64 only where the size needs it
                with zf.open(info, "w") as dst:
                    dst.write(header)
                    if len(idx) and row:
                        _copy_rows(self.folder / f"{name}.raw", row, idx, dst)
        os.chmod(path, 0o644)


def _zero_dims(spec) -> tuple[int, ...]:
    """The sample shape of an empty split no batch fixed: a dynamic axis of an empty array is 0."""
    return tuple(d if isinstance(d, int) else 0 for d in spec.sample_shape) if spec is not None else ()


def _npy_header(dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-order array of ``dtype`` and ``shape``."""
    import io

    import numpy as np

    buf = io.BytesIO()
    meta = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(buf, meta)
    except ValueError:  # a header over 64 KiB needs format 2.0, as np.save would choose
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, meta)
    return buf.getvalue()


def _copy_rows(raw: Path, row: int, idx, dst) -> None:
    """Copy rows ``idx`` of ``raw`` to ``dst``, reading runs of consecutive rows at once, at most ``CHUNK`` bytes."""
    per = max(1, CHUNK // row)
    fd = os.open(raw, os.O_RDONLY)
    try:
        i, n = 0, len(idx)
        while i < n:
            start, j = int(idx[i]), i + 1
            while j < n and j - i < per and int(idx[j]) == start + (j - i):
                j += 1
            dst.write(os.pread(fd, (j - i) * row, start * row))
            i = j
    finally:
        os.close(fd)
