"""Image data steps: image files (or packaged photos) decoded and transformed batch by batch with the model's
preprocessing contract (``qcompile.bundle.preprocess``, the module the bundle ships), split seeded and disjoint
into calibration and evaluation samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

from ..bundle.preprocess import open_image, preprocess_image
from ..errors import BadInput
from ..signature import TensorSpec
from .arrays import batches, save_samples
from .base import Step, StepContext, StepParams, register

# What a decoding failure looks like from Pillow: a bad or truncated file, or one it does not know.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError)


class ImageFilesParams(StepParams):
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None  # one class index per file, or None: unlabelled
    input: TensorSpec
    preprocess: dict[str, Any]  # the model's contract, with the concrete input shape
    eval_samples: int
    calib_samples: int
    seed: int
    on_bad_image: Literal["fail", "skip"] = "fail"
    batch_size: int = 32


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
class ImageFolderData(Step):
    """The user's image files, with labels or without, transformed as the model's preprocessing contract says."""

    kind = "data.image_folder"
    Params = ImageFilesParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy", "pillow")
    file_fields = ("files",)

    def preflight(self, p: ImageFilesParams) -> None:
        self._good(p)

    def _good(self, p: ImageFilesParams) -> list[int]:
        """Indices of the files that decode; a bad one is bad input (``fail``) or left out (``skip``)."""
        good = []
        for i, path in enumerate(p.files):
            problem = _decodable(path)
            if problem is None:
                good.append(i)
            elif p.on_bad_image == "fail":
                raise BadInput(f"{path} cannot be decoded as an image ({problem}); remove it, or set "
                               "data.on_bad_image=skip", key="data.path")
        need = p.eval_samples + p.calib_samples
        if len(good) < need:
            raise BadInput(f"has {len(good)} decodable images; data.eval_samples={p.eval_samples} plus "
                           f"quant.calibration.samples={p.calib_samples} need {need}", key="data.path")
        return good

    def run(self, ctx: StepContext, p: ImageFilesParams) -> dict[str, Any]:
        from .data import split

        # Preflight decoded every file already when a bad one fails the build: decode each only once more here.
        good = self._good(p) if p.on_bad_image == "skip" else list(range(len(p.files)))
        eval_pos, _, calib_pos = split(len(good), p.eval_samples, p.calib_samples, p.seed)
        loaders = [lambda path=path: _open_or_bad_input(path) for path in p.files]
        write_splits(ctx, loaders, None if p.labels is None else list(p.labels),
                     [good[i] for i in eval_pos], [good[i] for i in calib_pos], p.preprocess, p.input, p.batch_size)
        skipped = [str(p.files[i].name) for i in sorted(set(range(len(p.files))) - set(good))]
        if skipped:
            ctx.note(f"skipped {len(skipped)} images that cannot be decoded: {', '.join(skipped[:5])}")
        return {"calib": len(calib_pos), "eval": len(eval_pos), "labels": p.labels is not None,
                "skipped": len(skipped)}


# skimage.data's photos, with the ImageNet class a person looking at each would name where one class fits; the
# others are unlabelled (textures, microscopy, text...) and go to calibration.
PHOTO_LABELS = {"chelsea": 281,   # tabby, tabby cat: "Chelsea the cat", an orange tabby
                "coffee": 967,    # espresso: "Coffee cup", a photo courtesy of Pikolo Espresso Bar
                "clock": 892,     # wall clock: "Motion blurred clock", a wall clock
                "camera": 759}    # reflex camera: the cameraman's camera on its tripod
PHOTOS_UNLABELLED = ("astronaut", "rocket", "immunohistochemistry", "retina", "hubble_deep_field", "colorwheel",
                     "coins", "moon", "page", "text", "brick", "grass", "gravel", "horse", "logo", "microaneurysms",
                     "checkerboard")


class PhotosParams(StepParams):
    input: TensorSpec
    preprocess: dict[str, Any]
    calib_samples: int
    labels: dict[str, int]
    unlabelled: tuple[str, ...]
    labelled: bool = True


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
class PhotosData(Step):
    """scikit-image's real photos, offline, written to a folder at build time and read back as image files: the
    labelled ones are the evaluation set, the others calibrate."""

    kind = "data.photos"
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
        write_splits(ctx, loaders, labels if p.labelled else None, eval_idx, calib_idx, p.preprocess, p.input,
                     batch_size=8)
        return {"calib": len(calib_idx), "eval": len(eval_idx), "labels": p.labelled, "eval_photos": list(p.labels)}
