"""Image data steps: image files (or packaged photos) decoded and transformed batch by batch with the model's
preprocessing contract (``qcompile.bundle.preprocess``, the module the bundle ships), split seeded and disjoint
into calibration and evaluation samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..bundle.preprocess import open_image, preprocess_image
from ..errors import BadInput
from ..kinds.data.image_folder import ImageFolderParams
from ..kinds.data.photos import PhotosParams
from ..signature import TensorSpec
from .arrays import batches, save_samples
from .base import Step, StepContext, register

# What a decoding failure looks like from Pillow: a bad or truncated file, or one it does not know.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError)


def write_splits(ctx: StepContext, loaders: list[Callable[[], Any]], labels: list[int] | None,
                 eval_idx: list[int], calib_idx: list[int], spec: dict[str, Any], input_spec: TensorSpec,
                 batch_size: int) -> None:
    """Decode and transform the chosen images batch by batch (never every decoded image at once) into the
    calibration and evaluation sample files."""
    import numpy as np

    for split, idx in (("calib", calib_idx), ("eval", eval_idx)):
        x = np.empty((len(idx), *input_spec.sample_shape), dtype=input_spec.dtype)
        spans = batches(len(idx), batch_size)
        for a, b in ctx.track(spans, len(spans), f"{split} images"):
            for j in range(a, b):
                x[j] = preprocess_image(loaders[idx[j]](), spec)
        y = None if labels is None else np.asarray([labels[i] for i in idx], dtype=np.int64)
        save_samples(ctx.out(split), {input_spec.name: x}, y if split == "eval" else None)


def _decodable(path: Path) -> str | None:
    """None when Pillow decodes the file, else why not."""
    try:
        open_image(path).close()
    except _DECODE_ERRORS as e:
        return f"{type(e).__name__}: {str(e)[:120]}"
    return None


def _open_or_bad_input(path: Path):
    try:
        return open_image(path)
    except _DECODE_ERRORS as e:
        raise BadInput(f"{path} cannot be decoded as an image ({type(e).__name__}: {str(e)[:120]})",
                       key="data.path") from None


@register
class ImageFolderDataStep(Step):
    """The user's image files, with labels or without, transformed as the model's preprocessing contract says."""

    kind = "data.image_folder"
    version = 2  # 2: params hold the data section
    Params = ImageFolderParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy", "pillow")
    file_fields = ("files",)
    # The folder and the labels file reach the key as what they resolved to: the files' content and the labels.
    unkeyed = ("data.path", "data.labels")

    def preflight(self, p: ImageFolderParams) -> None:
        self._good(p)

    def _good(self, p: ImageFolderParams) -> list[int]:
        """Indices of the files that decode; a bad one is bad input (``fail``) or left out (``skip``)."""
        good = []
        for i, path in enumerate(p.files):
            problem = _decodable(path)
            if problem is None:
                good.append(i)
            elif p.data.on_bad_image == "fail":
                raise BadInput(f"{path} cannot be decoded as an image ({problem}); remove it, or set "
                               "data.on_bad_image=skip", key="data.path")
        need = p.data.eval_samples + p.calib_samples
        if len(good) < need:
            raise BadInput(f"has {len(good)} decodable images; data.eval_samples={p.data.eval_samples} plus "
                           f"quant.calibration.samples={p.calib_samples} need {need}", key="data.path")
        return good

    def run(self, ctx: StepContext, p: ImageFolderParams) -> dict[str, Any]:
        from .data import split

        # Preflight decoded every file already when a bad one fails the build: decode each only once more here.
        good = self._good(p) if p.data.on_bad_image == "skip" else list(range(len(p.files)))
        eval_pos, _, calib_pos = split(len(good), p.data.eval_samples, p.calib_samples, p.data.seed)
        loaders = [lambda path=path: _open_or_bad_input(path) for path in p.files]
        write_splits(ctx, loaders, None if p.labels is None else list(p.labels), [good[i] for i in eval_pos],
                     [good[i] for i in calib_pos], p.preprocess, p.input, p.data.batch_size)
        skipped = [str(p.files[i].name) for i in sorted(set(range(len(p.files))) - set(good))]
        if skipped:
            ctx.note(f"skipped {len(skipped)} images that cannot be decoded: {', '.join(skipped[:5])}")
        return {"calib": len(calib_pos), "eval": len(eval_pos), "labels": p.labels is not None,
                "skipped": len(skipped)}


def photo(name: str):
    """One skimage.data photo as a Pillow image (grey and binary images as L, RGBA as RGB)."""
    import numpy as np
    import skimage.data
    from PIL import Image

    a = getattr(skimage.data, name)()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    img = Image.fromarray(a)
    return img.convert("RGB") if img.mode == "RGBA" else img


@register
class PhotosDataStep(Step):
    """scikit-image's real photos, offline, written to a folder at build time and read back as image files: the
    labelled ones are the evaluation set, the others calibrate."""

    kind = "data.photos"
    version = 2  # 2: params hold the data section
    Params = PhotosParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("scikit-image", "numpy", "pillow")

    def run(self, ctx: StepContext, p: PhotosParams) -> dict[str, Any]:
        try:
            import skimage.data  # noqa: F401
        except ImportError:
            raise BadInput("the photos need scikit-image: pip install 'qcompile[images]'", key="data.kind") from None
        names = [*p.labels, *p.unlabelled]
        # Written to a folder first, then read back as any image folder is: the photos take the file path users'
        # images take (PNG is lossless, so the pixels are skimage's).
        folder = ctx.workdir / "photos"
        folder.mkdir()
        paths = []
        for n in names[:len(p.labels) + p.calib_samples]:
            paths.append(folder / f"{n}.png")
            photo(n).save(paths[-1])
        loaders = [lambda path=path: open_image(path) for path in paths]
        labels = [*p.labels.values(), *([-1] * len(p.unlabelled))]
        eval_idx = list(range(len(p.labels)))
        calib_idx = list(range(len(p.labels), len(p.labels) + p.calib_samples))
        write_splits(ctx, loaders, labels if p.data.labelled else None, eval_idx, calib_idx, p.preprocess, p.input,
                     batch_size=8)
        return {"calib": len(calib_idx), "eval": len(eval_idx), "labels": p.data.labelled,
                "eval_photos": list(p.labels)}
