"""The ``data.npy_folder`` step: the chosen .npy files stacked into the calibration and evaluation samples."""

from __future__ import annotations

from typing import Any

from ..errors import BadInput
from ..kinds.data.npy_folder import NpyFolderParams
from .arrays import save_samples
from .base import Step, StepContext, register
from .data import split


@register
class NpyFolderDataStep(Step):
    """Loads the split's files (``allow_pickle=False``), checks each against the model's input, and saves them."""

    kind = "data.npy_folder"
    Params = NpyFolderParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy",)
    file_fields = ("files",)
    unkeyed = ("data.path",)  # the folder reaches the key as its files' content

    def run(self, ctx: StepContext, p: NpyFolderParams) -> dict[str, Any]:
        import numpy as np

        eval_idx, _, calib_idx = split(len(p.files), p.data.eval_samples, p.calib_samples, p.data.seed)
        for name, idx in (("calib", calib_idx), ("eval", eval_idx)):
            x = np.stack([self._sample(p, p.files[i]) for i in idx]) if len(idx) else \
                np.empty((0, *p.input.sample_shape), dtype=p.input.dtype)
            y = np.asarray([p.labels[i] for i in idx], np.int64) if p.labels and name == "eval" else None
            save_samples(ctx.out(name), {p.input.name: x}, y)
        return {"calib": len(calib_idx), "eval": len(eval_idx), "labels": p.labels is not None}

    def _sample(self, p: NpyFolderParams, path):
        import numpy as np

        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:  # not an .npy, truncated, or an object array (a pickle)
            raise BadInput(f"{path} is not an array numpy loads safely ({str(e)[:120]})", key="data.path") from None
        want = p.input.sample_shape
        if x.ndim != len(want) or any(isinstance(w, int) and w != d for w, d in zip(want, x.shape)):
            raise BadInput(f"{path} holds shape {x.shape}; the model's input {p.input.name!r} takes {tuple(want)} "
                           "per sample", key="data.path")
        if p.input.is_float and not (np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all()):
            raise BadInput(f"{path} must hold finite floats ({x.dtype})", key="data.path")
        return x.astype(p.input.dtype)
